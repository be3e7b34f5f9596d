//! The test bed's SFTP server (ftp_pooler_testbed::SftpServer, `serve sshd`), checked with
//! the system's OpenSSH sftp client: key and password logins, the pinned host key, the
//! chroot's layout (`/files`), downloads, uploads and renames.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use ftp_pooler_testbed::sftp::ssh_dir;
use ftp_pooler_testbed::{ftp_password, ftp_user, SftpServer, SSH_KEY_PASSPHRASE};

/// How the client logs in.
enum Auth<'a> {
    /// A private key without passphrase.
    Key(&'a Path),
    /// An encrypted private key, its passphrase typed by sshpass.
    EncryptedKey(&'a Path, &'a str),
    /// A password, typed by sshpass (public keys not offered).
    Password(&'a str),
}

/// Runs `sftp -b BATCH` against `server`, trusting only `known_hosts` (strictly).
fn sftp(server: &SftpServer, auth: Auth, known_hosts: &str, batch: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("{known_hosts}\n")).unwrap();
    let batch_file = dir.path().join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    let mut cmd = match auth {
        Auth::Key(_) => Command::new("sftp"),
        Auth::EncryptedKey(_, passphrase) => {
            let mut c = Command::new("sshpass");
            c.args(["-P", "passphrase", "-p", passphrase, "sftp"]);
            c
        }
        Auth::Password(password) => {
            let mut c = Command::new("sshpass");
            c.args(["-p", password, "sftp"]);
            c
        }
    };
    // No user or system configuration; only the keys given here. sftp -b turns BatchMode
    // on (no prompts) after the options before it: sshpass needs the prompts.
    cmd.args(["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ]);
    match auth {
        Auth::Key(key) => {
            cmd.arg("-i")
                .arg(key)
                .args(["-o", "PasswordAuthentication=no"]);
        }
        Auth::EncryptedKey(key, _) => {
            cmd.args([
                "-o",
                "BatchMode=no",
                "-o",
                "PasswordAuthentication=no",
                "-i",
            ])
            .arg(key);
        }
        Auth::Password(_) => {
            cmd.args([
                "-o",
                "BatchMode=no",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
            ]);
        }
    }
    cmd.arg("-b")
        .arg(&batch_file)
        .arg("-P")
        .arg(server.port.to_string())
        .arg(format!("{}@127.0.0.1", ftp_user()));
    cmd.output().expect("run sftp (openssh-client) / sshpass")
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output, server: &SftpServer) {
    assert!(
        out.status.success(),
        "sftp failed: {}\nsshd's log:\n{}",
        describe(out),
        server.output()
    );
}

#[test]
fn key_login_download_upload_rename() {
    let server = SftpServer::start();
    let kh = server.known_hosts_line();
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", server.port)),
        "{kh}"
    );
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    server.put("in/hello.bin", &payload);
    assert_eq!(server.remote_path("in/hello.bin"), "/files/in/hello.bin");

    let local = tempfile::tempdir().unwrap();
    let fetched = local.path().join("fetched.bin");
    let upload = local.path().join("upload.txt");
    std::fs::write(&upload, b"uploaded over sftp\n").unwrap();
    let batch = format!(
        "pwd\nls /\nget /files/in/hello.bin {}\nmkdir /files/out\nput {} /files/out/up.tmp\n\
         rename /files/out/up.tmp /files/out/up.txt\nls -l /files/out\n",
        fetched.display(),
        upload.display()
    );
    let out = sftp(&server, Auth::Key(&server.client_key()), &kh, &batch);
    assert_ok(&out, &server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The chroot: "/" holds only "files".
    assert!(stdout.contains("Remote working directory: /\n"), "{stdout}");
    assert_eq!(std::fs::read(&fetched).unwrap(), payload);

    let landed = server.root().join("out/up.txt");
    assert_eq!(std::fs::read(&landed).unwrap(), b"uploaded over sftp\n");
    assert!(!server.root().join("out/up.tmp").exists(), "renamed away");
    let user = nix::unistd::User::from_name(&ftp_user()).unwrap().unwrap();
    assert_eq!(std::fs::metadata(&landed).unwrap().uid(), user.uid.as_raw());
    assert!(
        server.output().contains("Accepted publickey for"),
        "{}",
        server.output()
    );

    // "/" itself is the root-owned chroot: not writable.
    let denied = sftp(
        &server,
        Auth::Key(&server.client_key()),
        &kh,
        &format!("put {} /nope.txt\n", upload.display()),
    );
    assert!(!denied.status.success(), "{}", describe(&denied));
    assert!(!server.chroot().join("nope.txt").exists());
}

#[test]
fn password_and_encrypted_key_logins() {
    let server = SftpServer::start();
    let kh = server.known_hosts_line();
    server.put("a.txt", b"a");

    let out = sftp(&server, Auth::Password(&ftp_password()), &kh, "ls /files\n");
    assert_ok(&out, &server);
    assert!(String::from_utf8_lossy(&out.stdout).contains("a.txt"));
    assert!(server.output().contains("Accepted password for"));

    let wrong = sftp(
        &server,
        Auth::Password("not-the-password"),
        &kh,
        "ls /files\n",
    );
    assert!(!wrong.status.success(), "{}", describe(&wrong));

    // The encrypted key: what its passphrase opens is the public key beside it.
    let enc = server.client_key_encrypted();
    let derived = Command::new("ssh-keygen")
        .args(["-y", "-P", SSH_KEY_PASSPHRASE, "-f"])
        .arg(&enc)
        .output()
        .unwrap();
    assert!(derived.status.success(), "{}", describe(&derived));
    let public = std::fs::read_to_string(ssh_dir().join("client_ed25519_encrypted.pub")).unwrap();
    let key_of = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(
        key_of(&String::from_utf8_lossy(&derived.stdout)),
        key_of(&public)
    );
    let no_pass = Command::new("ssh-keygen")
        .args(["-y", "-P", "", "-f"])
        .arg(&enc)
        .output()
        .unwrap();
    assert!(!no_pass.status.success(), "the key is encrypted");

    let out = sftp(
        &server,
        Auth::EncryptedKey(&enc, SSH_KEY_PASSPHRASE),
        &kh,
        "ls /files\n",
    );
    assert_ok(&out, &server);
}

#[test]
fn host_key_is_pinned_and_survives_restart() {
    let mut server = SftpServer::start();
    // The fingerprint as ssh-keygen prints it.
    let listed = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(ssh_dir().join("ssh_host_ed25519_key.pub"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", describe(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let fingerprint = server.host_key_fingerprint();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert_eq!(listed.split_whitespace().nth(1), Some(fingerprint.as_str()));

    // Another key for 127.0.0.1:PORT in known_hosts: the client refuses the server.
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("k");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", describe(&made));
    let other_pub = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let wrong_kh = format!(
        "[127.0.0.1]:{} {}",
        server.port,
        other_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let refused = sftp(&server, Auth::Key(&server.client_key()), &wrong_kh, "pwd\n");
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        describe(&refused)
    );

    // A restart: same port, same host key, same files.
    server.put("kept.txt", b"kept");
    let port = server.port;
    server.restart();
    assert_eq!(server.port, port);
    let out = sftp(
        &server,
        Auth::Key(&server.client_key()),
        &server.known_hosts_line(),
        "ls /files\n",
    );
    assert_ok(&out, &server);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept.txt"));
}
