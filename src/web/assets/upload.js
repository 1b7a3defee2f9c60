// The upload page, enhanced: many images at once (picked or dropped), each
// sent on its own to POST / as JSON and shown as soon as its label comes
// back. Without this script the form still posts one image and the server
// answers with the same result card as HTML.
"use strict";

(function () {
  const form = document.getElementById("upload");
  const input = document.getElementById("file");
  const results = document.getElementById("results");
  // Uploads in flight at once: enough to keep a few workers busy, few
  // enough that the first labels arrive quickly.
  const PARALLEL = 3;
  const waiting = [];
  let running = 0;

  input.multiple = true;
  input.required = false;
  form.classList.add("enhanced");

  input.addEventListener("change", () => {
    enqueue(input.files);
    input.value = "";
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    enqueue(input.files);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    form.addEventListener(name, (event) => {
      event.preventDefault();
      form.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    form.addEventListener(name, () => form.classList.remove("over"));
  }
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    enqueue(event.dataTransfer.files);
  });

  function enqueue(files) {
    for (const file of Array.from(files || [])) {
      const card = pendingCard(file);
      results.prepend(card);
      waiting.push([file, card]);
    }
    pump();
  }

  function pump() {
    while (running < PARALLEL && waiting.length > 0) {
      const [file, card] = waiting.shift();
      running += 1;
      classify(file, card).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  async function classify(file, card) {
    const body = new FormData();
    body.append("myfile", file, file.name);
    const started = performance.now();
    try {
      const response = await fetch("/", {
        method: "POST",
        body,
        headers: { Accept: "application/json" },
      });
      const seconds = (performance.now() - started) / 1000;
      const text = await response.text();
      let answer = null;
      try {
        answer = JSON.parse(text);
      } catch (_) {
        // Not JSON: a proxy's page, or a limit hit before the handler.
      }
      if (response.ok && answer && answer.status === "done") {
        showDone(card, answer, seconds);
      } else {
        const message = (answer && answer.message) || text.trim() || response.statusText;
        showError(card, response.status, message);
      }
    } catch (error) {
      showError(card, 0, "the service could not be reached: " + error.message);
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pendingCard(file) {
    const card = el("article", "result pending");
    card.dataset.state = "pending";
    const img = el("img", "preview");
    img.alt = "";
    img.src = URL.createObjectURL(file);
    img.onload = () => URL.revokeObjectURL(img.src);
    card.append(img);
    const body = el("div", "body");
    body.append(el("h2", "label", "classifying…"));
    body.append(el("p", "meta", file.name));
    card.append(body);
    return card;
  }

  function percent(p) {
    return (p * 100).toFixed(1) + "%";
  }

  function showDone(card, answer, seconds) {
    card.className = "result done";
    card.dataset.state = "done";
    const body = card.querySelector(".body");
    body.replaceChildren();
    body.append(el("h2", "label", answer.label));
    const meta = el("p", "meta");
    meta.append(
      el("span", "file", answer.file_name),
      el("span", "probability", percent(answer.probability)),
      el("span", "time", seconds.toFixed(2) + " s"),
    );
    if (answer.timings && answer.timings.inference_ms) {
      meta.append(el("span", "inference", answer.timings.inference_ms.toFixed(0) + " ms model"));
    }
    body.append(meta);
    const list = el("ol", "top5");
    for (const p of answer.top5 || []) {
      const row = el("li");
      row.append(el("span", "name", p.label));
      const bar = el("span", "bar");
      const fill = el("span", "fill");
      fill.style.width = percent(p.probability);
      bar.append(fill);
      row.append(bar, el("span", "p", percent(p.probability)));
      list.append(row);
    }
    body.append(list);
  }

  function showError(card, status, message) {
    card.className = "result error";
    card.dataset.state = "error";
    const body = card.querySelector(".body");
    const name = body.querySelector(".meta").textContent;
    // A file the browser cannot show either: no empty preview frame.
    const preview = card.querySelector(".preview");
    if (preview) preview.remove();
    body.replaceChildren();
    body.append(el("h2", "label", status ? "Not classified (" + status + ")" : "Not classified"));
    body.append(el("p", "meta", name));
    body.append(el("p", "message", message));
  }
})();
