//! Transport: the API over TLS (rustls) with a certificate made at test time.

use crate::helpers::{spawn_app_with, test_settings, token_for, Backend};

#[actix_web::test]
async fn the_api_serves_https_with_the_configured_certificate_and_refuses_plain_http() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("Failed to generate a certificate");
    let dir = std::env::temp_dir().join(format!("fd-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();

    let (mut settings, db_dir) = test_settings(Backend::Sqlite).await;
    settings.tls.enabled = true;
    settings.tls.cert_path = dir.join("cert.pem");
    settings.tls.key_path = dir.join("key.pem");
    let app = spawn_app_with(settings, db_dir).await;
    let port = app.address.rsplit(':').next().unwrap().to_string();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let https = format!("https://localhost:{port}");
    let res = client
        .get(format!("{https}/healthz"))
        .send()
        .await
        .expect("TLS handshake");
    assert_eq!(res.status().as_u16(), 200);
    let res = client
        .get(format!("{https}/readyz"))
        .bearer_auth(token_for("prometheus"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    // A client that does not trust the certificate refuses the connection.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting
        .get(format!("{https}/healthz"))
        .send()
        .await
        .is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status().as_u16() >= 400);
    let _ = std::fs::remove_dir_all(&dir);
}
