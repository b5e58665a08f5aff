//! What differs between the OpenSIPS releases rsec supports (3.4, 3.6,
//! 4.0), inside the real one the tests run against (OPENSIPS_BIN): on 4.0,
//! a request relayed by a load balancer with a PROXY-protocol header is
//! counted, and banned, as the client the header names, never as the
//! balancer. The rest of the suite runs unchanged on every release.

#[cfg(opensips_abi = "4.0")]
mod proxy_protocol {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use crate::support::opensips::{self, free_tcp_port, heavy, s, OpenSips, TestDir};

    const CFG: &str = include_str!("../cfg/proxy.cfg");

    /// One TCP connection to the balancer's listener, opened with a PROXY
    /// header naming `client` when given.
    struct Conn {
        tcp: TcpStream,
        port: u16,
        n: u32,
    }

    impl Conn {
        fn open(port: u16, client: Option<&str>) -> Conn {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            if let Some(c) = client {
                write!(tcp, "PROXY TCP4 {c} 127.0.0.1 40000 {port}\r\n").unwrap();
            }
            Conn { tcp, port, n: 0 }
        }

        /// An OPTIONS on the connection; the reply's status code.
        fn options(&mut self) -> u16 {
            self.n += 1;
            let (port, n) = (self.port, self.n);
            let lport = self.tcp.local_addr().unwrap().port();
            let msg = format!(
                "OPTIONS sip:x@127.0.0.1:{port};transport=tcp SIP/2.0\r\n\
                 Via: SIP/2.0/TCP 127.0.0.1:{lport};branch=z9hG4bK-pp-{lport}-{n}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:t@127.0.0.1>;tag=pp{lport}-{n}\r\n\
                 To: <sip:x@127.0.0.1>\r\n\
                 Call-ID: pp-{lport}-{n}@127.0.0.1\r\n\
                 CSeq: {n} OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            self.tcp.write_all(msg.as_bytes()).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 2048];
            // A stateless reply has no body: it ends at the blank line.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = self
                    .tcp
                    .read(&mut chunk)
                    .expect("a reply on the connection");
                assert!(k > 0, "connection closed");
                buf.extend_from_slice(&chunk[..k]);
            }
            String::from_utf8_lossy(&buf[8..11]).parse().unwrap()
        }
    }

    #[test]
    fn the_client_behind_a_proxy_protocol_balancer_is_banned_not_the_balancer() {
        let Some(env) = opensips::env(
            "the_client_behind_a_proxy_protocol_balancer_is_banned_not_the_balancer",
            false,
        ) else {
            return;
        };
        let _g = heavy();
        let dir = TestDir::new("versions_proxy");
        let tcp = free_tcp_port();
        let os = OpenSips::start(env, &dir, "proxy", CFG, &[("TCP_PORT", s(tcp))]);

        let mut attacker = Conn::open(tcp, Some("203.0.113.7"));
        let codes: Vec<u16> = (0..7).map(|_| attacker.options()).collect();
        assert_eq!(
            codes,
            [200, 200, 200, 200, 200, 403, 403],
            "{}",
            os.tail(20)
        );
        let bans = os.wait_events(1, |e| e.get("ev") == "ban");
        assert_eq!(bans.len(), 1, "{bans:?}");
        assert_eq!(
            bans[0].get("ip"),
            "203.0.113.7",
            "the client, not the balancer"
        );

        // The balancer's own requests, and another client's through it, pass.
        let mut balancer = Conn::open(tcp, None);
        assert_eq!(balancer.options(), 200);
        let mut other = Conn::open(tcp, Some("203.0.113.8"));
        assert_eq!(other.options(), 200);
        assert_eq!(
            os.events().iter().filter(|e| e.get("ev") == "ban").count(),
            1
        );
        // $si is still the balancer: the script sees the socket's peer.
        assert!(
            os.log().contains("check=pike si=127.0.0.1 r=-2"),
            "{}",
            os.tail(20)
        );
    }
}
