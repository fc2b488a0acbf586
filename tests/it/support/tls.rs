//! A throwaway certificate authority and a certificate it signed for 127.0.0.1, made with openssl,
//! as a self-hosted MinIO or mail relay would have.

use std::path::{Path, PathBuf};

use super::tool;

pub struct TestCa {
    /// The CA's certificate (what a client must be told to trust).
    pub ca: PathBuf,
    /// The server's certificate and key, for 127.0.0.1.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Writes the CA and a server certificate into `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let p = |f: &str| dir.join(f).display().to_string();
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ca_args = [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=stackback test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ];
        let csr_args = [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("srv.csr"),
        ];
        let sign_args = [
            "x509",
            "-req",
            "-in",
            &p("srv.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("cert.pem"),
        ];
        for args in [&ca_args[..], &csr_args[..], &sign_args[..]] {
            let (ok, out) = tool("openssl", args);
            assert!(ok, "openssl {args:?}: {out}");
        }
        TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}
