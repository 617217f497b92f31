//! The container publisher for `fanout --source container --spawn-container`.
//!
//! Owns one throw-away container: a temp folder holding a FIFO is
//! bind-mounted at `/lt`, and the container runs `cat /lt/fifo`, so every
//! stamp line the load generator writes into the FIFO comes out of the
//! container's stdout and through Docker's log pipeline, exactly like an
//! application's own output. The container runs with `--network none` and is
//! removed (and the folder deleted) when this value is dropped.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

#[derive(Debug)]
pub struct SpawnedContainer {
    pub name: String,
    pub fifo: PathBuf,
    dir: PathBuf,
    docker: String,
}

impl SpawnedContainer {
    /// Creates the FIFO and starts the container.
    ///
    /// # Errors
    /// The FIFO cannot be made, or `docker run` fails.
    pub fn start(docker: &str, image: &str) -> anyhow::Result<SpawnedContainer> {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("dwlt-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
        let fifo = dir.join("fifo");
        let c =
            CString::new(fifo.to_string_lossy().as_bytes()).context("could not name the FIFO")?;
        // SAFETY: valid C string path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o666) } != 0 {
            bail!(
                "could not create FIFO {}: {}",
                fifo.display(),
                std::io::Error::last_os_error()
            );
        }
        // The container may run as another user: let it open the FIFO.
        // SAFETY: valid C string path.
        unsafe { libc::chmod(c.as_ptr(), 0o666) };
        let name = format!("dwlt-{id}");
        let made = SpawnedContainer {
            name: name.clone(),
            fifo,
            dir: dir.clone(),
            docker: docker.to_string(),
        };
        let out = Command::new(docker)
            .args([
                "run",
                "-d",
                "--rm",
                "--network",
                "none",
                "--name",
                &name,
                "-v",
            ])
            .arg(format!("{}:/lt", dir.display()))
            .args([image, "cat", "/lt/fifo"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run {docker}"))?;
        if !out.status.success() {
            bail!(
                "could not start container from {image}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(made)
    }
}

impl Drop for SpawnedContainer {
    fn drop(&mut self) {
        let _ = Command::new(&self.docker)
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
