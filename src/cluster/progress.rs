//! Progress of long operations on stderr: a spinner on a terminal, plain lines otherwise.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

const FRAMES: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Reports steps. On a terminal the current step spins until the next one; otherwise each
/// step is one line (`vcsync: <step>`), which is what logs and tests see.
pub struct Progress {
    current: Arc<Mutex<Option<String>>>,
    spinner: Option<JoinHandle<()>>,
    quiet: bool,
}

impl Progress {
    /// Spinner when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(quiet: bool) -> Progress {
        let current = Arc::new(Mutex::new(None::<String>));
        let spinner = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let current = current.clone();
            std::thread::spawn(move || {
                let mut frame = 0usize;
                loop {
                    {
                        let guard = current.lock().unwrap();
                        match guard.as_deref() {
                            Some("\0stop") => break,
                            Some(step) => {
                                eprint!("\r\x1b[2K{} {step}", FRAMES[frame % FRAMES.len()]);
                                let _ = std::io::stderr().flush();
                            }
                            None => {}
                        }
                    }
                    frame += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Progress {
            current,
            spinner,
            quiet,
        }
    }

    /// A progress that prints nothing.
    pub fn silent() -> Progress {
        Progress::new(true)
    }

    /// Starts a step (ending the previous one).
    pub fn step(&self, message: impl Into<String>) {
        let message = message.into();
        if self.quiet {
            return;
        }
        let mut current = self.current.lock().unwrap();
        if self.spinner.is_some() {
            if let Some(previous) = current.take() {
                eprintln!("\r\x1b[2K✓ {previous}");
            }
            *current = Some(message);
        } else {
            eprintln!("vcsync: {message}");
        }
    }

    /// Shows how far the current step got as a bar on a terminal (`what [####    ] 3/8`);
    /// nothing otherwise (logs see the steps).
    pub fn count(&self, what: &str, done: usize, total: usize) {
        if self.quiet || self.spinner.is_none() {
            return;
        }
        *self.current.lock().unwrap() = Some(format!("{what} {}", bar(done, total)));
    }

    /// A line the user should see beside the steps (a driver skipped, say); nothing when quiet.
    pub fn note(&self, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        let _current = self.current.lock().unwrap();
        match self.spinner {
            Some(_) => eprintln!("\r\x1b[2Kvcsync: note: {message}"),
            None => eprintln!("vcsync: note: {message}"),
        }
    }

    /// Ends the last step.
    pub fn finish(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            let previous = self.current.lock().unwrap().replace("\0stop".into());
            let _ = spinner.join();
            if let Some(previous) = previous {
                eprintln!("\r\x1b[2K✓ {previous}");
            }
        }
    }
}

/// `[#####     ] 5/10`: 20 cells.
fn bar(done: usize, total: usize) -> String {
    const CELLS: usize = 20;
    let filled = (done.min(total) * CELLS).checked_div(total).unwrap_or(CELLS);
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(CELLS - filled)
    )
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bar_fills_in_proportion_and_never_overflows() {
        assert_eq!(super::bar(0, 10), format!("[{}] 0/10", " ".repeat(20)));
        assert_eq!(
            super::bar(5, 10),
            format!("[{}{}] 5/10", "#".repeat(10), " ".repeat(10))
        );
        assert_eq!(super::bar(12, 10), format!("[{}] 12/10", "#".repeat(20)));
        assert_eq!(super::bar(0, 0), format!("[{}] 0/0", "#".repeat(20)));
    }
}
