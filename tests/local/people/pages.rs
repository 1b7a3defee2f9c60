//! The upload page over plain HTTP, as a browser without JavaScript uses
//! it: the page, a form post answered with an HTML result, the preview
//! image; and the classic contract beside it, unchanged.

use reqwest::blocking::multipart::{Form, Part};

use crate::support::{sample, Server};

/// What a browser sends with a form post.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn form_post(
    client: &reqwest::blocking::Client,
    url: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::blocking::Response {
    client
        .post(url)
        .header("Accept", BROWSER_ACCEPT)
        .multipart(Form::new().part("myfile", Part::bytes(bytes).file_name(name.to_owned())))
        .send()
        .unwrap()
}

#[test]
fn the_upload_page_works_as_a_plain_form() {
    let server = Server::start(&["serve", "--workers", "1"]);
    let client = reqwest::blocking::Client::new();

    let page = client.get(server.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().unwrap();
    for part in [
        r#"<form id="upload""#,
        r#"method="post" action="/""#,
        r#"enctype="multipart/form-data""#,
        r#"name="myfile""#,
    ] {
        assert!(html.contains(part), "the page lacks {part}");
    }
    for asset in ["style.css", "upload.js", "dashboard.js"] {
        let response = client
            .get(server.url(&format!("/assets/{asset}")))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
    assert_eq!(
        client
            .get(server.url("/assets/secret"))
            .send()
            .unwrap()
            .status(),
        404
    );

    // The form's post: the page again, with the result card.
    let response = form_post(
        &client,
        &server.url("/"),
        "coffee.png",
        sample("coffee.png"),
    );
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().unwrap();
    assert!(
        html.contains(r#"<h2 class="label">espresso</h2>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="file">coffee.png</span>"#),
        "{html}"
    );
    assert_eq!(html.matches("<li>").count(), 5, "top 5 bars: {html}");
    assert!(
        html.contains(r#"<span class="time">"#),
        "time taken: {html}"
    );
    // The preview is the uploaded image, served back as what it is.
    let src = html
        .split(r#"src="/jobs/"#)
        .nth(1)
        .expect("a preview")
        .split('"')
        .next()
        .unwrap();
    let image = client
        .get(server.url(&format!("/jobs/{src}")))
        .send()
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(image.headers()["x-content-type-options"], "nosniff");
    assert_eq!(image.bytes().unwrap().to_vec(), sample("coffee.png"));

    // An error: the page with the sentence the API gives, and its status.
    let refused = client
        .post(server.url("/"))
        .header("Accept", "application/json")
        .multipart(Form::new().part(
            "myfile",
            Part::bytes(b"hello".to_vec()).file_name("notes.txt"),
        ))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 415);
    let sentence = refused.json::<serde_json::Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = form_post(
        &client,
        &server.url("/upload"),
        "notes.txt",
        b"hello".to_vec(),
    );
    assert_eq!(response.status(), 415);
    let html = response.text().unwrap();
    assert!(html.contains(r#"class="result error""#), "{html}");
    assert!(
        html.contains(&format!(r#"<p class="message">{sentence}</p>"#)),
        "{sentence:?} not in {html}"
    );

    // The classic contract beside it: text for curl, JSON on request.
    let response = crate::support::upload(
        &client,
        &server.url("/"),
        "myfile",
        "camera.png",
        sample("camera.png"),
        false,
    );
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().unwrap(), "tripod");
    let response = crate::support::upload(
        &client,
        &server.url("/upload"),
        "myfile",
        "camera.png",
        sample("camera.png"),
        true,
    );
    assert_eq!(
        response.json::<serde_json::Value>().unwrap()["label"],
        "tripod"
    );
}
