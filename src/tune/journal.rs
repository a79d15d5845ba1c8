//! The journal (`--journal FILE`): one JSON line per finished trial after a
//! header line naming the tune's fingerprint. Each line is written and
//! flushed when its trial ends, so a SIGKILL loses at most the trial in
//! flight (and perhaps leaves half a line, which `--resume` drops).
//!
//! `--resume` replays the recorded trials in order: the search is
//! deterministic for a given seed and history, so it proposes the same
//! candidates again, and each one found in the journal is taken from it
//! instead of being measured. The first proposal that differs ends the
//! replay; later lines are dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::report::{Phase, TrialRecord};
use super::space::Candidate;
use super::{TuneConfig, TuneError};

/// Identifier of the journal format.
pub const JOURNAL_SCHEMA: &str = "throtl.tune-journal.v1";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    schema: String,
    fingerprint: String,
}

/// An open journal (or none: every call is a no-op).
pub struct Journal {
    path: Option<PathBuf>,
    file: Option<File>,
    old: Vec<TrialRecord>,
    replaying: bool,
    fingerprint: String,
    /// Trials taken from the journal instead of measured.
    pub replayed: usize,
}

/// What the journal must match to be resumed: template, space, objective, SLOs.
pub fn fingerprint(cfg: &TuneConfig) -> String {
    let slos: Vec<String> = cfg
        .bench
        .workload
        .slos
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        cfg.template.source(),
        cfg.space_text,
        cfg.objective.name(),
        slos.join(","),
        cfg.seed
    );
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

impl Journal {
    /// Opens `cfg.journal`: with `--resume` loads it, else creates it
    /// (refusing to overwrite one with trials in it).
    pub fn open(cfg: &TuneConfig) -> Result<Self, TuneError> {
        let Some(path) = cfg.journal.clone() else {
            return Ok(Self {
                path: None,
                file: None,
                old: Vec::new(),
                replaying: false,
                fingerprint: String::new(),
                replayed: 0,
            });
        };
        let fp = fingerprint(cfg);
        let old = if cfg.resume {
            load(&path, &fp)?
        } else {
            fresh(&path)?
        };
        let mut j = Self {
            path: Some(path),
            file: None,
            replaying: !old.is_empty(),
            old,
            fingerprint: fp,
            replayed: 0,
        };
        j.rewrite(usize::MAX)?;
        Ok(j)
    }

    /// Rewrites the file with the header and the first `keep` old records.
    fn rewrite(&mut self, keep: usize) -> Result<(), TuneError> {
        let fp = self.fingerprint.clone();
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |e: std::io::Error| {
            TuneError::Journal(format!("cannot write --journal '{}': {e}", path.display()))
        };
        let mut text = serde_json::to_string(&Header {
            schema: JOURNAL_SCHEMA.into(),
            fingerprint: fp,
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        text.push('\n');
        for r in self.old.iter().take(keep) {
            text.push_str(&serde_json::to_string(r).map_err(|e| err(std::io::Error::other(e)))?);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(err)?;
        self.file = Some(OpenOptions::new().append(true).open(path).map_err(err)?);
        Ok(())
    }

    /// The recorded trial at `index` if it is this candidate and phase.
    pub fn replay(
        &mut self,
        index: usize,
        c: &Candidate,
        phase: &Phase,
    ) -> Result<Option<TrialRecord>, TuneError> {
        if !self.replaying {
            return Ok(None);
        }
        match self.old.get(index) {
            Some(r) if &r.knobs == c && &r.phase == phase => {
                self.replayed += 1;
                Ok(Some(r.clone()))
            }
            _ => {
                // The search went another way (or the journal ends here):
                // keep the matching prefix only and measure from here on.
                self.replaying = false;
                if index < self.old.len() {
                    self.rewrite(index)?;
                }
                Ok(None)
            }
        }
    }

    /// Appends a finished trial and flushes it.
    pub fn append(&mut self, r: &TrialRecord) -> Result<(), TuneError> {
        let (Some(f), Some(path)) = (self.file.as_mut(), &self.path) else {
            return Ok(());
        };
        let line = serde_json::to_string(r).map_err(|e| TuneError::Journal(e.to_string()))? + "\n";
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| {
                TuneError::Journal(format!(
                    "cannot append to --journal '{}': {e}",
                    path.display()
                ))
            })
    }
}

fn fresh(path: &PathBuf) -> Result<Vec<TrialRecord>, TuneError> {
    let has_trials = std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() > 1);
    if has_trials {
        return Err(TuneError::Journal(format!(
            "--journal '{}' already holds trials: add --resume to continue that tune, or remove the file to start over",
            path.display()
        )));
    }
    Ok(Vec::new())
}

fn load(path: &PathBuf, fp: &str) -> Result<Vec<TrialRecord>, TuneError> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TuneError::Journal(format!(
                "cannot read --journal '{shown}': {e}"
            )))
        }
    };
    let mut lines = text.lines();
    let header: Option<Header> = lines.next().and_then(|l| serde_json::from_str(l).ok());
    match header {
        Some(h) if h.schema == JOURNAL_SCHEMA && h.fingerprint == fp => {}
        Some(h) if h.schema == JOURNAL_SCHEMA => {
            return Err(TuneError::Journal(format!(
                "--journal '{shown}' was written by a tune with another --launch, --space, --objective, --slo or --seed: --resume needs the same ones (or remove the file to start over)"
            )))
        }
        None if text.trim().is_empty() => return Ok(Vec::new()),
        _ => return Err(TuneError::Journal(format!("--journal '{shown}' is not a throtl tune journal"))),
    }
    let rest: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, l) in rest.iter().enumerate() {
        match serde_json::from_str::<TrialRecord>(l) {
            Ok(r) => out.push(r),
            // A kill mid-write leaves half a last line: that trial runs again.
            Err(_) if i + 1 == rest.len() => break,
            Err(e) => {
                return Err(TuneError::Journal(format!(
                    "--journal '{shown}' line {} is damaged ({e}); remove the line or the file",
                    i + 2
                )))
            }
        }
    }
    Ok(out)
}
