//! An open-loop load generator for latency at a fixed rate (what wrk2 does,
//! which Debian does not ship): each keep-alive HTTP/1.1 connection sends on
//! a fixed schedule, and a request's latency runs from its *scheduled* send
//! time, so a stall is charged to every request it held back instead of
//! slowing the load down (no coordinated omission). std only.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// One paced window.
#[derive(Debug, Clone, Copy)]
pub struct Paced {
    /// Responses per second actually completed.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    /// Non-2xx answers and broken connections.
    pub failed: u64,
}

/// Sends `request` (complete bytes, keep-alive) to `addr` at `rate` per
/// second over `connections` connections for `duration`, the load threads
/// pinned to `cpu` when given.
pub fn run(
    addr: SocketAddr,
    request: &[u8],
    rate: u32,
    connections: u32,
    duration: Duration,
    cpu: Option<u32>,
) -> io::Result<Paced> {
    let connections = connections.max(1);
    let period = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let workers: Vec<_> = (0..connections)
        .map(|i| {
            let request = request.to_vec();
            // Stagger the connections evenly across one period.
            let first = start + period.mul_f64(f64::from(i) / f64::from(connections));
            thread::spawn(move || {
                if let Some(cpu) = cpu {
                    pin_this_thread(cpu)?;
                }
                connection(addr, &request, first, period, end)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for worker in workers {
        let (mut l, f) = worker
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))??;
        latencies.append(&mut l);
        failed += f;
    }
    let elapsed = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| -> f64 {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    Ok(Paced {
        rps: latencies.len() as f64 / elapsed.max(1e-9),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        requests: latencies.len() as u64 + failed,
        failed,
    })
}

/// One connection's schedule: latencies (µs) of the 2xx answers, and failures.
fn connection(
    addr: SocketAddr,
    request: &[u8],
    first: Instant,
    period: Duration,
    end: Instant,
) -> io::Result<(Vec<u32>, u64)> {
    let mut stream = open(addr)?;
    let mut buf = Vec::with_capacity(4096);
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut scheduled = first;
    while scheduled < end {
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let answer = stream
            .write_all(request)
            .and_then(|()| read_response(&mut stream, &mut buf));
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                let us = Instant::now()
                    .saturating_duration_since(scheduled)
                    .as_micros();
                latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                stream = open(addr)?;
            }
        }
        scheduled += period;
    }
    Ok((latencies, failed))
}

/// `taskset` on this thread's id (from `/proc/thread-self`), so only the load
/// threads move, not the whole xtask.
pub(super) fn pin_this_thread(cpu: u32) -> io::Result<()> {
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| io::Error::other("cannot read /proc/thread-self"))?
        .to_string();
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "taskset -p -c {cpu} {tid} failed"
        )))
    }
}

pub(super) fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Reads one response with a `content-length` body into `buf`; returns its
/// status.
pub(super) fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status line"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no content-length"))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A tiny keep-alive server answering every request with `200` and "ok".
    fn serve() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let mut pending = Vec::new();
                    loop {
                        let n = match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..i + 4);
                            let _ =
                                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn paced_load_keeps_its_rate_and_measures_latency() {
        let addr = serve();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = run(addr, request, 400, 4, Duration::from_millis(500), None).unwrap();
        assert_eq!(r.failed, 0);
        assert!((180..=220).contains(&r.requests), "{r:?}");
        assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms, "{r:?}");
    }
}
