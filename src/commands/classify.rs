//! `imagefleet classify FILE...`: one `FILE<TAB>label<TAB>probability` line
//! per file, no server involved.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::args::ModelArgs;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Returns false when any file could not be classified.
pub fn run(args: ClassifyArgs) -> anyhow::Result<bool> {
    let classifier = args.model.load()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    for file in &args.files {
        let result = std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| classifier.classify(&bytes).map_err(|e| e.to_string()));
        match result {
            Ok(classification) => {
                let best = classification.best();
                writeln!(
                    out,
                    "{}\t{}\t{:.4}",
                    file.display(),
                    best.label,
                    best.probability
                )?;
            }
            Err(e) => {
                all_ok = false;
                eprintln!("{}: {e}", file.display());
            }
        }
    }
    Ok(all_ok)
}
