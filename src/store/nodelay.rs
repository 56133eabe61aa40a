//! TCP_NODELAY on the store's PostgreSQL connections.
//!
//! sqlx 0.9.0 leaves Nagle's algorithm on for the TCP sockets it opens (a regression
//! reported as transact-rs/sqlx#4335, fixed upstream by #4336, not released yet).
//! A statement larger than one TCP segment then has its last segment held until the
//! server acknowledges the previous one, and the server delays that acknowledgement
//! by up to 40 ms: every multi-row statement of a group commit waited ~40 ms (measured
//! in docs/benchmarks.md, "Ingest at the store's limit"). libpq sets TCP_NODELAY on
//! every connection; this does the same for the sockets sqlx opened, right after each
//! connection is established (the pool's `after_connect`).

/// Sets TCP_NODELAY on every TCP socket of this process connected to `port` (the
/// PostgreSQL port); answers how many it set. Setting it twice is harmless, so each
/// new pooled connection runs it again for every socket to that port.
#[cfg(target_os = "linux")]
pub fn disable_nagle_to_port(port: u16) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|l| l.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if is_socket && peer_port(fd) == Some(port) && set_nodelay(fd) {
            set += 1;
        }
    }
    set
}

/// Not Linux: sockets cannot be listed here; nothing is set.
#[cfg(not(target_os = "linux"))]
pub fn disable_nagle_to_port(_port: u16) -> usize {
    0
}

#[cfg(target_os = "linux")]
fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into a zeroed sockaddr_storage,
    // which is large enough for any address family; an fd that is not a connected
    // socket makes it fail, and the result is then ignored.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        match i32::from(addr.ss_family) {
            libc::AF_INET => {
                let a: &libc::sockaddr_in = &*(&addr as *const libc::sockaddr_storage).cast();
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 => {
                let a: &libc::sockaddr_in6 = &*(&addr as *const libc::sockaddr_storage).cast();
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

#[cfg(target_os = "linux")]
fn set_nodelay(fd: i32) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on an open descriptor with a pointer to a live int
    // and its size; a descriptor that is not a TCP socket makes it fail, harmlessly.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// True when TCP_NODELAY is set on `fd` (tests).
#[cfg(target_os = "linux")]
pub fn nodelay_of(fd: i32) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into `v`, whose size is passed.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    ok && v != 0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_sockets_connected_to_the_port_get_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_port = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!nodelay_of(to_port.as_raw_fd()), "Nagle is on by default");
        assert!(disable_nagle_to_port(port) >= 1);
        assert!(nodelay_of(to_port.as_raw_fd()));
        assert!(
            !nodelay_of(elsewhere.as_raw_fd()),
            "other sockets are left alone"
        );
    }
}
