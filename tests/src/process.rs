//! Processes the tests start: each in its own process group, killed (the whole group) and reaped
//! on drop, so nothing outlives a test even when it panics. Only what the test started is killed.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// A started process, leader of its own process group.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Option<Child>,
    /// Set once reaped by `try_wait`: no signal goes to its pid after that.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawn `cmd` in a new process group.
    /// It is also SIGKILLed if the test's thread dies without cleaning up (a killed test run).
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            status: None,
        }
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("process already reaped")
    }

    /// Exit status if it has exited (reaps it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
        }
        self.status
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `sig` to the process only (not its group).
    pub fn signal(&self, sig: libc::c_int) {
        if self.child.is_some() && self.status.is_none() {
            // SAFETY: plain kill(2) on a pid we started and have not reaped yet.
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    /// SIGKILL the whole process group and reap the leader.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: the group is the one we created for this child. While the leader is not
            // reaped, or any member of its group lives, its pid (the group id) cannot be reused.
            unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished process printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "status: {:?} (signal {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.status.signal(),
            self.stdout,
            self.stderr
        )
    }
}

fn collect<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<String>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    })
}

/// Run `cmd` to completion (stdin null, output captured), killing its group after `timeout`.
pub fn run(name: &str, cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn(name, cmd);
    finish(&mut p, timeout)
}

fn finish(p: &mut Proc, timeout: Duration) -> Output {
    let out = collect(p.child_mut().stdout.take());
    let err = collect(p.child_mut().stderr.take());
    let status = match p.wait_timeout(timeout) {
        Some(s) => s,
        None => {
            p.kill();
            let stdout = out
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            let stderr = err
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            panic!("{} did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}", p.name);
        }
    };
    // The leader exited; anything it left in its group goes too.
    p.kill();
    Output {
        status,
        stdout: out
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: err
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// A process started but held at a gate (`sh` waiting on its stdin) until `release`, when it
/// `exec`s the real program under the same pid. So its pid is known before it does anything and
/// the agent can be started with `--pid` for it.
pub struct Gated {
    proc: Proc,
    gate: Option<ChildStdin>,
}

impl Gated {
    pub fn spawn(name: &str, program: &str, args: &[String]) -> Gated {
        Self::spawn_with_env(name, program, args, &[])
    }

    /// `spawn`, the program getting these extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Gated {
        let mut cmd = Command::new("/bin/sh");
        cmd.envs(env.iter().copied());
        cmd.arg("-c")
            .arg("read -r _ || exit 97; exec \"$@\"")
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(name, &mut cmd);
        let gate = proc.child_mut().stdin.take();
        Gated { proc, gate }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Let the program run.
    pub fn release(&mut self) {
        let mut g = self.gate.take().expect("released twice");
        g.write_all(b"go\n").expect("opening the gate");
        drop(g);
    }

    /// Release (if not yet) and wait for it to finish.
    pub fn finish(mut self, timeout: Duration) -> Output {
        if self.gate.is_some() {
            self.release();
        }
        finish(&mut self.proc, timeout)
    }

    /// Released and running in the background; dropped: killed.
    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// A line-reading thread on a child's output: lines arrive on a channel.
pub fn line_channel<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => {
                    // Keep reading (draining the pipe) even when nobody listens any more.
                    let _ = tx.send(l);
                }
                Err(_) => break,
            }
        }
    });
    rx
}
