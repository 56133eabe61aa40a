//! SIGHUP re-reads `config/` and applies the reloadable sections without a restart
//! (stored live changes stay on top of the files; see tests/api/live_config.rs).
//! (Its own test binary: the signal goes to the whole process.)

use frontdoor::configuration::base_configuration;
use frontdoor::startup::Application;
use secrecy::SecretString;

#[actix_web::test]
async fn sighup_reloads_routing_thresholds_from_the_configuration_files() {
    let dir = std::env::temp_dir().join(format!("frontdoor-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut settings = base_configuration().unwrap();
    settings.application.port = 0;
    settings.store.url = SecretString::from(format!("sqlite://{}", dir.join("t.db").display()));
    // Start with a value that differs from config/base.toml (30).
    settings.routing.offer_timeout_secs = 99;
    let app = Application::build(settings).await.unwrap();
    let runtime = app.runtime().clone();
    actix_rt::spawn(app.run_until_stopped());
    assert_eq!(runtime.tunables()["routing"]["offer_timeout_secs"], 99);

    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while runtime.tunables()["routing"]["offer_timeout_secs"] != 30
        && std::time::Instant::now() < deadline
    {
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(runtime.tunables()["routing"]["offer_timeout_secs"], 30);
    // The files changed, not the stored changes: the version (of the stored
    // changes every node applies) stays, so all nodes still report the same one.
    assert_eq!(runtime.version(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
