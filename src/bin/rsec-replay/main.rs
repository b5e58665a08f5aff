//! rsec-replay, under construction: for now it lists an input's SIP
//! messages; the engine run and the report come next.

mod capture;
mod sip;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: rsec-replay INPUT");
        std::process::exit(2);
    };
    let mut sip = 0u64;
    let read = capture::read(std::path::Path::new(&path), &mut |m| {
        if let Some(s) = sip::parse(m.bytes) {
            sip += 1;
            println!("{} {} -> {} {:?}", m.ts_us, m.src, m.dst, s.kind);
        }
        Ok(())
    });
    match read {
        Ok((format, stats)) => println!(
            "{path} ({}): {} packets, {sip} SIP messages ({} over UDP, {} over TCP)",
            format.name(),
            stats.packets,
            stats.udp,
            stats.tcp
        ),
        Err(e) => {
            eprintln!("rsec-replay: {e}");
            std::process::exit(1);
        }
    }
}
