"""Drive a command under a pseudo-terminal as a person at the keyboard would, and sign in for them.

stdin, stdout and stderr are the pty's slave, so the program sees a real terminal (its "is a person
there?" checks answer yes). Output is read by a thread into one growing text; `expect` waits on a
condition variable for a pattern to show up, with a generous timeout, and fails naming what it saw.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import stat
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from conftest import CHROMEDRIVER
from eventually import wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | Path | None = None,
                 rows: int = 50, cols: int = 250) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))  # no wrapped lines
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self._master = master
        self._raw: list[str] = []
        self._seen = 0  # where the next expect starts: answers are matched in order
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: every holder of the slave side has closed it
                data = b""
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._raw.append(data.decode("utf-8", "replace"))
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return ANSI.sub("", "".join(self._raw))

    def expect(self, pattern: str, timeout: float) -> re.Match:
        """Wait until `pattern` (a regex) appears after the last match; fail with the output so far."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = ANSI.sub("", "".join(self._raw))
                m = regex.search(text, self._seen)
                if m:
                    self._seen = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(f"{'timed out' if left <= 0 else 'output ended'} waiting for "
                                         f"{pattern!r}; output after the last match:\n{text[self._seen:][-4000:]}")
                self._cond.wait(left)

    def send(self, line: str) -> None:
        os.write(self._master, (line + "\r").encode())

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._reader.join(10)
        try:
            os.close(self._master)
        except OSError:
            pass


def debugger_address(profile: Path, timeout: float = 120.0) -> str:
    """The DevTools address of the browser pobatch opened on `profile` (Chromium writes it there)."""
    def listening() -> str | None:
        try:
            port = int((profile / "DevToolsActivePort").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return None
        return f"127.0.0.1:{port}"
    return wait_for(listening, timeout, "the sign-in window's DevTools port", interval=0.1)


def sign_in_through_devtools(profile: Path, email: str, password: str, timeout: float = 120.0) -> None:
    """Be the person: attach a second WebDriver client to pobatch's sign-in window and sign in there."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.debugger_address = debugger_address(profile, timeout)
    client = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        WebDriverWait(client, timeout).until(ec.presence_of_element_located((By.ID, "user_email")))
        client.find_element(By.ID, "user_email").send_keys(email)
        client.find_element(By.ID, "user_password").send_keys(password)
        try:
            client.find_element(By.CSS_SELECTOR, "form#new_session [type=submit]").click()
        except WebDriverException:
            pass  # pobatch may notice the sign-in and close the window before the click returns
    finally:
        try:
            client.quit()  # attached, not launched: the driver goes, the browser stays pobatch's
        except WebDriverException:
            pass


def fake_opener(tmp_path: Path) -> tuple[Path, Path]:
    """An xdg-open stand-in on PATH that writes down what it was asked to open."""
    bin_dir, log = tmp_path / "bin", tmp_path / "opened.txt"
    bin_dir.mkdir()
    script = bin_dir / "xdg-open"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log
