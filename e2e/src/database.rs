//! login-service's database for a stack: a SQLite file in the stack's directory (the default) or
//! a fresh database on the MariaDB at `TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`),
//! created with the `mysql` client and dropped on drop, so every stack starts empty.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Where a stack's login-service keeps its data.
#[derive(Debug)]
pub enum Database {
    /// `login.sqlite` in the stack's directory.
    Sqlite,
    /// `mysql://…/<name>`; `(base URL, name)`.
    Mysql(String, String),
}

impl Database {
    /// A fresh MariaDB database.
    pub fn mysql() -> anyhow::Result<Self> {
        let base = std::env::var("TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        let db = Self::Mysql(base, name.clone());
        db.mysql_client(&format!("CREATE DATABASE `{name}`"))?;
        Ok(db)
    }

    /// Runs one statement with the `mysql` client against the server of `TEST_MYSQL_URL`
    /// (`mysql://user[:password]@host[:port]`).
    fn mysql_client(&self, sql: &str) -> anyhow::Result<()> {
        let Self::Mysql(base, _) = self else {
            return Ok(());
        };
        let rest = base.strip_prefix("mysql://").context("TEST_MYSQL_URL")?;
        let (creds, host) = rest.rsplit_once('@').unwrap_or(("root", rest));
        let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
        let (host, port) = host.split_once(':').unwrap_or((host, "3306"));
        let mut command = Command::new("mysql");
        command.args(["-h", host, "-P", port, "-u", user, "-e", sql]);
        if !password.is_empty() {
            command.env("MYSQL_PWD", password);
        }
        let output = command.output().context("run the mysql client")?;
        if !output.status.success() {
            bail!(
                "mysql -e {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The `DATABASE_URL` login-service gets; a SQLite database lives in `dir`.
    pub fn url(&self, dir: &Path) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}", dir.join("login.sqlite").display()),
            Self::Mysql(base, name) => format!("{base}/{name}"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Self::Mysql(_, name) = &*self {
            let sql = format!("DROP DATABASE IF EXISTS `{name}`");
            let _ = self.mysql_client(&sql);
        }
    }
}
