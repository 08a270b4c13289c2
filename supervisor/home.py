"""``$CORRAL_HOME``: the private directory that holds the sockets, the lock,
the logs and the user catalog, and the lock that makes one supervisor per home."""

from __future__ import annotations

import fcntl
import os
import stat

from corral.configs.settings import Settings
from corral.supervisor.errors import CorralError, SupervisorUnreachable


class AlreadyRunning(CorralError):
    exit_code = 1


def _private_dir(path, what: str) -> None:
    """Make ``path`` 0700 if it is new; an existing one must be ours and not
    writable by others. A directory corral did not create is never chmod-ed
    (CORRAL_HOME=$HOME must not change $HOME's mode)."""
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode passes through the umask
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise SupervisorUnreachable(f"cannot create {what} {path} ({exc.strerror}); set CORRAL_HOME to a writable directory") from None
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SupervisorUnreachable(f"{what} {path} is not a directory; set CORRAL_HOME to a directory")
    if st.st_uid != os.getuid():
        raise SupervisorUnreachable(f"{what} {path} belongs to another user; set CORRAL_HOME to a directory of your own")
    if st.st_mode & 0o022:
        raise SupervisorUnreachable(
            f"{what} {path} is writable by other users, who could replace corral's sockets; "
            f"run `chmod go-w {path}` or set CORRAL_HOME to a private directory"
        )


def prepare_home(settings: Settings) -> None:
    _private_dir(settings.home, "the corral home")
    _private_dir(settings.log_dir, "the log folder")


def hold_pid_lock(settings: Settings) -> int:
    """One supervisor per home: an exclusive lock held for the process's
    life (the kernel drops it however the process ends), with the pid inside."""
    fd = os.open(settings.pid_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"a corral supervisor is already running for {settings.home} (pid {pid}); stop it with `corral stop`") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
