//! Ending a process plugin's whole process tree, whatever it did to leave it.
//!
//! In bubblewrap the PID namespace does this (see [`super::sandbox`]). Without isolation, and as
//! a second line inside it, every run is marked with an environment variable naming the run, and
//! after the run this kills, until none is left: every process carrying the mark (so an orphan
//! re-parented to init is found too) and, when the run timed out (its root is not reaped yet, so
//! its pid cannot have been reused), every process descending from the root by parent pid (so a
//! `setsid` child that scrubbed its environment but whose parent lives is found). A non-isolated plugin that
//! both orphans a child and scrubs its environment escapes this; that is why isolation is
//! required by default.

use std::collections::{BTreeSet, HashMap};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The environment variable that marks a run's processes.
pub(super) const MARK_VAR: &str = "AEX_TOOL_RUN";

/// One process as `/proc/<pid>/stat` shows it.
struct Proc {
    parent: i32,
    zombie: bool,
}

fn processes() -> HashMap<i32, Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
            let state = rest.next()?;
            let parent = rest.next()?.parse().ok()?;
            Some((
                pid,
                Proc {
                    parent,
                    zombie: state == "Z" || state == "X",
                },
            ))
        })
        .collect()
}

fn carries(pid: i32, mark: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == mark))
}

/// The live processes of the run: `root`'s descendants and every process with the mark.
fn members(root: Option<i32>, mark: &[u8]) -> BTreeSet<i32> {
    let procs = processes();
    let mut tree: BTreeSet<i32> = root.into_iter().collect();
    loop {
        let before = tree.len();
        let children: Vec<i32> = procs
            .iter()
            .filter(|(_, p)| tree.contains(&p.parent))
            .map(|(pid, _)| *pid)
            .collect();
        tree.extend(children);
        if tree.len() == before {
            break;
        }
    }
    tree.extend(procs.keys().filter(|pid| carries(**pid, mark)));
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    tree.retain(|pid| *pid != me && procs.get(pid).is_some_and(|p| !p.zombie));
    tree
}

/// Kills the run's processes until none is left (blocking: call it off the runtime).
pub(super) fn kill_tree(root: Option<u32>, run_id: &str) {
    let mark = format!("{MARK_VAR}={run_id}").into_bytes();
    let root = root.and_then(|r| i32::try_from(r).ok());
    // A process may fork between the scan and the kill; its child is found in the next round.
    for _ in 0..200 {
        let live = members(root, &mark);
        if live.is_empty() {
            return;
        }
        for pid in live {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    tracing::warn!(run_id, "processes of a tool run survived repeated SIGKILLs");
}
