//! `web-timing`: measures the web client on this machine for BENCHMARKS.md: the size of
//! the bundle (raw, and gzip as served: the files `scripts/build-web` compressed) and the
//! time from navigation to a usable sign-in screen in headless Chromium, with a cold cache
//! (a fresh profile) each run.

use natter_e2e::{Driver, Server, web_client_dir};

/// Resolves with `performance.now()` (ms since navigation started) once the sign-in form's
/// username field exists and the module script has run: checked every animation frame.
const WAIT_FOR_FORM: &str = r#"
const done = arguments[arguments.length - 1];
(function check() {
  if (document.querySelector('[data-testid=auth-username]')) {
    const nav = performance.getEntriesByType('navigation')[0];
    done({ usable: performance.now(), dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd });
  } else {
    requestAnimationFrame(check);
  }
})();
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const RUNS: usize = 5;
    println!("| asset | raw | gzip |");
    println!("|---|---|---|");
    let assets = web_client_dir()?.join("assets");
    let (mut total_raw, mut total_gzip) = (0, 0);
    let mut files: Vec<_> = std::fs::read_dir(&assets)?.collect::<Result<_, _>>()?;
    files.retain(|f| f.path().extension().is_none_or(|ext| ext != "gz"));
    files.sort_by_key(|f| f.file_name());
    for file in files {
        let bytes = std::fs::read(file.path())?;
        // What browsers that accept gzip get: the .gz the build wrote next to the asset.
        let gzip = std::fs::metadata(format!("{}.gz", file.path().display()))?.len() as usize;
        total_raw += bytes.len();
        total_gzip += gzip;
        println!(
            "| {} | {:.1} KiB | {:.1} KiB |",
            file.file_name().to_string_lossy(),
            bytes.len() as f64 / 1024.0,
            gzip as f64 / 1024.0
        );
    }
    println!(
        "| total | {:.1} KiB | {:.1} KiB |",
        total_raw as f64 / 1024.0,
        total_gzip as f64 / 1024.0
    );

    let server = Server::start().await?;
    let driver = Driver::start().await?;
    let mut usable = Vec::new();
    println!();
    println!("| run (cold cache) | DOMContentLoaded | load | sign-in form usable |");
    println!("|---|---|---|---|");
    for run in 1..=RUNS {
        let browser = driver.desktop().await?;
        browser.client.goto(&server.url).await?;
        let timing = browser.client.execute_async(WAIT_FOR_FORM, vec![]).await?;
        let ms = |key: &str| timing[key].as_f64().unwrap_or(f64::NAN);
        usable.push(ms("usable"));
        println!(
            "| {run} | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms("dcl"),
            ms("load"),
            ms("usable")
        );
        browser.client.close().await?;
    }
    usable.sort_by(f64::total_cmp);
    println!("| median | | | {:.0} ms |", usable[RUNS / 2]);
    Ok(())
}
