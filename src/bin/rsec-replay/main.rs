//! rsec-replay, under construction: for now it lists an input's SIP
//! messages, or the rsec parameters of an opensips.cfg (`--cfg FILE`);
//! the engine run and the report come next.

mod capture;
mod cfg;
mod sip;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = &args[..] {
        if flag == "--cfg" {
            let ps = cfg::read_file(file).unwrap_or_else(|e| {
                eprintln!("rsec-replay: {e}");
                std::process::exit(1)
            });
            if let Err(e) = cfg::config(&ps) {
                eprintln!("rsec-replay: {e}");
                std::process::exit(1);
            }
            for p in cfg::describe(&ps) {
                println!("{p}");
            }
            let _ = cfg::set;
            return;
        }
    }
    let Some(path) = args.first() else {
        eprintln!("usage: rsec-replay INPUT | --cfg FILE");
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
