//! Upstream authentication the local PostgreSQL (trust auth) cannot exercise: a fake upstream
//! server demands SCRAM-SHA-256 (verified here independently, RFC 5802/7677), md5 or a
//! cleartext password, and the proxy must log in with the grant's stored password — which its
//! own client never sees.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, BufMut, BytesMut};
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_core::secret::Secret;
use warden_pgwire::{Upstream, UpstreamTls};

const UPSTREAM_USER: &str = "app";
const UPSTREAM_PASSWORD: &str = "s3cret-upstream-pw";

#[derive(Clone, Copy, Debug)]
enum Method {
    Scram,
    Md5,
    Cleartext,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn msg(tag: u8, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_i32(body.len() as i32 + 4);
    b.put_slice(body);
    b
}

fn auth(code: i32, data: &[u8]) -> BytesMut {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    msg(b'R', &body)
}

async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let tag = s.read_u8().await.unwrap();
    let len = s.read_i32().await.unwrap() as usize - 4;
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.unwrap();
    (tag, body)
}

fn error(code: &str, m: &str) -> BytesMut {
    msg(b'E', format!("SFATAL\0C{code}\0M{m}\0\0").as_bytes())
}

/// One fake-server session; returns whether the client authenticated.
async fn serve_one(mut s: TcpStream, method: Method) -> bool {
    let len = s.read_i32().await.unwrap() as usize - 4;
    let mut startup = vec![0; len];
    s.read_exact(&mut startup).await.unwrap();
    let text = String::from_utf8_lossy(&startup[4..]).to_string();
    assert!(
        text.contains(&format!("user\0{UPSTREAM_USER}\0")),
        "{text:?}"
    );
    assert!(
        text.contains("application_name\0from_client\0"),
        "client parameters pass through: {text:?}"
    );
    let ok = match method {
        Method::Cleartext => {
            s.write_all(&auth(3, b"")).await.unwrap();
            let (tag, body) = read_msg(&mut s).await;
            tag == b'p' && body == format!("{UPSTREAM_PASSWORD}\0").as_bytes()
        }
        Method::Md5 => {
            let salt = [1, 2, 3, 4];
            s.write_all(&auth(5, &salt)).await.unwrap();
            let (_, body) = read_msg(&mut s).await;
            let inner = format!(
                "{:x}",
                Md5Hex(format!("{UPSTREAM_PASSWORD}{UPSTREAM_USER}").as_bytes())
            );
            let outer = format!("md5{:x}", Md5Hex(&[inner.as_bytes(), &salt].concat()));
            body == format!("{outer}\0").as_bytes()
        }
        Method::Scram => {
            s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
            let (_, body) = read_msg(&mut s).await;
            let mut b = &body[..];
            let mech_end = b.iter().position(|&c| c == 0).unwrap();
            assert_eq!(&b[..mech_end], b"SCRAM-SHA-256");
            b.advance(mech_end + 1);
            let n = b.get_i32() as usize;
            let client_first = String::from_utf8(b[..n].to_vec()).unwrap();
            let bare = client_first
                .strip_prefix("n,,")
                .expect("gs2 header without channel binding");
            let cnonce = bare.split(",r=").nth(1).unwrap();
            let salt = b"fake-salt-123456";
            let server_first = format!("r={cnonce}srvnonce,s={},i=4096", B64.encode(salt));
            s.write_all(&auth(11, server_first.as_bytes()))
                .await
                .unwrap();
            let (_, body) = read_msg(&mut s).await;
            let client_final = String::from_utf8(body).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            let salted = hi(UPSTREAM_PASSWORD.as_bytes(), salt, 4096);
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = Sha256::digest(&client_key);
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let expected: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            if B64.decode(proof).unwrap() != expected {
                false
            } else {
                let server_key = hmac(&salted, b"Server Key");
                let server_sig = hmac(&server_key, auth_message.as_bytes());
                s.write_all(&auth(
                    12,
                    format!("v={}", B64.encode(server_sig)).as_bytes(),
                ))
                .await
                .unwrap();
                true
            }
        }
    };
    if !ok {
        s.write_all(&error(
            "28P01",
            &format!("password authentication failed for user \"{UPSTREAM_USER}\""),
        ))
        .await
        .unwrap();
        return false;
    }
    let mut hello = auth(0, b"");
    hello.extend(msg(b'S', b"server_version\x0015.0-fake\0"));
    hello.extend(msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
    hello.extend(msg(b'Z', b"I"));
    s.write_all(&hello).await.unwrap();
    loop {
        let (tag, _) = read_msg(&mut s).await;
        match tag {
            b'Q' => {
                let mut out = msg(b'C', b"SELECT 0\0");
                out.extend(msg(b'Z', b"I"));
                s.write_all(&out).await.unwrap();
            }
            _ => return true,
        }
    }
}

/// Minimal MD5 for the fake server's own check (RFC 1321), independent of the proxy's code.
struct Md5Hex<'a>(&'a [u8]);

impl std::fmt::LowerHex for Md5Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: [u32; 64] = [
            7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20,
            5, 9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
            6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
        ];
        let k: Vec<u32> = (0..64)
            .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
            .collect();
        let mut msg = self.0.to_vec();
        let bit_len = (msg.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_le_bytes());
        let (mut a0, mut b0, mut c0, mut d0) =
            (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
        for chunk in msg.chunks(64) {
            let m: Vec<u32> = chunk
                .chunks(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f2 = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f2.rotate_left(s[i]));
            }
            a0 = a0.wrapping_add(a);
            b0 = b0.wrapping_add(b);
            c0 = c0.wrapping_add(c);
            d0 = d0.wrapping_add(d);
        }
        for v in [a0, b0, c0, d0] {
            for byte in v.to_le_bytes() {
                write!(f, "{byte:02x}")?;
            }
        }
        Ok(())
    }
}

async fn fake_upstream(method: Method) -> (u16, tokio::sync::mpsc::UnboundedReceiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(serve_one(s, method).await);
            });
        }
    });
    (port, rx)
}

async fn proxy_to(port: u16, password: &str) -> Proxy {
    let backend = TestBackend {
        upstream: Some(Upstream {
            host: "127.0.0.1".into(),
            port,
            user: UPSTREAM_USER.into(),
            password: Some(Secret::new(password.into())),
            database: "appdb".into(),
            tls: UpstreamTls::Disable,
        }),
        ..TestBackend::allow_all()
    };
    Proxy::start(backend).await
}

#[test]
fn md5_helper_matches_known_vector() {
    assert_eq!(
        format!("{:x}", Md5Hex(b"abc")),
        "900150983cd24fb0d6963f7d28e17f72"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_authenticates_upstream_with_scram_md5_and_cleartext() {
    for method in [Method::Scram, Method::Md5, Method::Cleartext] {
        let (port, mut outcomes) = fake_upstream(method).await;
        let proxy = proxy_to(port, UPSTREAM_PASSWORD).await;
        let conninfo = format!("{} application_name=from_client", proxy.conninfo("disable"));
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.simple_query("SELECT 0").await.unwrap();
        drop(client);
        let authenticated = tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
            .await
            .unwrap();
        assert_eq!(authenticated, Some(true), "{method:?}");
        proxy.stop().await;

        // A wrong stored password: the client gets a generic 08006, never the upstream's user name.
        let (port, _outcomes) = fake_upstream(method).await;
        let proxy = proxy_to(port, "wrong").await;
        let conninfo = format!("{} application_name=from_client", proxy.conninfo("disable"));
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls),
        )
        .await
        .unwrap()
        .err()
        .unwrap();
        let db = err.as_db_error().unwrap();
        assert_eq!(db.code().code(), "08006", "{method:?}");
        assert!(
            db.message()
                .contains("could not open the connection \"prod-db\""),
            "{}",
            db.message()
        );
        assert!(!db.message().contains(UPSTREAM_USER));
        proxy.stop().await;
    }
}
