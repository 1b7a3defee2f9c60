//! Result cards as HTML, for the upload page without JavaScript. The markup
//! is the one the page's script builds, so one stylesheet serves both.
//! Everything from a client or a worker (file names, labels, messages) is
//! escaped.

use std::fmt::Write;

use serde_json::Value;

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn percent(probability: f64) -> String {
    format!("{:.1}%", probability * 100.0)
}

/// The card for an upload's JSON answer: a result (`status: done`) or an
/// error (`error`, `message`, maybe `id`), with the HTTP status it came
/// with.
pub fn card(answer: &Value, status: u16) -> String {
    if answer["status"] == "done" {
        done_card(answer)
    } else {
        error_card(answer, status)
    }
}

fn done_card(answer: &Value) -> String {
    let text = |key: &str| escape(answer[key].as_str().unwrap_or(""));
    let id = answer["id"].as_str().unwrap_or("");
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<article class="result done" data-state="done"><img class="preview" alt="" src="/jobs/{id}/image"><div class="body"><h2 class="label">{label}</h2><p class="meta"><span class="file">{file}</span><span class="probability">{p}</span>"#,
        id = escape(id),
        label = text("label"),
        file = text("file_name"),
        p = percent(answer["probability"].as_f64().unwrap_or(0.0)),
    );
    if let Some(ms) = answer["timings"]["total_ms"].as_f64() {
        let _ = write!(html, r#"<span class="time">{:.2} s</span>"#, ms / 1e3);
    }
    if let Some(ms) = answer["timings"]["inference_ms"].as_f64() {
        let _ = write!(html, r#"<span class="inference">{ms:.0} ms model</span>"#);
    }
    html.push_str(r#"</p><ol class="top5">"#);
    for prediction in answer["top5"].as_array().into_iter().flatten() {
        let p = percent(prediction["probability"].as_f64().unwrap_or(0.0));
        let _ = write!(
            html,
            r#"<li><span class="name">{name}</span><span class="bar"><span class="fill" style="width:{p}"></span></span><span class="p">{p}</span></li>"#,
            name = escape(prediction["label"].as_str().unwrap_or("")),
        );
    }
    html.push_str("</ol></div></article>");
    html
}

fn error_card(answer: &Value, status: u16) -> String {
    let message = answer["message"]
        .as_str()
        .unwrap_or("the service gave no reason");
    let mut html = format!(
        r#"<article class="result error" data-state="error"><div class="body"><h2 class="label">Not classified ({status})</h2><p class="message">{}</p>"#,
        escape(message)
    );
    if let Some(id) = answer["id"].as_str() {
        let id = escape(id);
        let _ = write!(
            html,
            r#"<p class="meta">job <a href="/jobs/{id}">{id}</a></p>"#
        );
    }
    html.push_str("</div></article>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_text_is_escaped() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        let card = card(
            &json!({"status": "done", "id": "1", "label": "cat", "probability": 0.5,
                    "file_name": "<script>.png", "top5": [{"label": "<b>", "probability": 0.5}]}),
            200,
        );
        assert!(card.contains("&lt;script&gt;.png"));
        assert!(card.contains("&lt;b&gt;"));
        assert!(!card.contains("<script>"));
    }

    #[test]
    fn errors_show_the_api_sentence() {
        let card = card(
            &json!({"error": "unsupported_format", "message": "not an image <sic>"}),
            415,
        );
        assert!(card.contains("Not classified (415)"));
        assert!(card.contains("not an image &lt;sic&gt;"));
    }
}
