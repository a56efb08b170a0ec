"""hsagent.service: the option table both services declare their options in (command line and
configuration file), its converters, and the HTTP pieces they share (bearer tokens, TLS,
listening, stopping on a signal), each against the real thing: argparse, files, sockets,
signals, an HTTPS client."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl

import pytest
from aiohttp import ClientError, ClientSession, web
from hypothesis import given, strategies as st

from hsagent.service import options
from hsagent.service.options import ConfigError, Endpoint, Given, Option
from hsagent.service.web import (bearer_auth, bearer_refusal, listen, stop_listening, tls_context,
                                 until_stopped)
from hsagent.tokens import Tokens

TABLE = {
    "max-rules": Option(options.ranged(1, 1000), "most rules"),
    "listen": Option(options.endpoint, "where", "ADDR:PORT"),
    "mode": Option(options.choice("fast", "slow"), "how"),
    "no-auth": Option(options.boolean, "anyone may", None),
}
WRITER = "writer-token-0123456789"
READER = "reader-token-0123456789"


def parse(argv, default_file="/nonexistent/service.conf"):
    parser = argparse.ArgumentParser(prog="svc")
    options.add_common_arguments(parser, "1.0", default_file)
    options.add_options(parser, TABLE)
    args = parser.parse_args(argv)
    return args, options.gather(args, TABLE, default_file)


# --- the option table --------------------------------------------------------------------------

def test_the_command_line_wins_over_the_file(tmp_path):
    conf = tmp_path / "svc.conf"
    conf.write_text("# a comment\n\nmax-rules = 5   # trailing comment\nMODE = slow\n"
                    "listen = 127.0.0.1:80\n")
    args, given = parse(["-c", str(conf), "--max-rules", "7", "--no-auth", "-dd"])
    assert given == {"max-rules": Given("7", "--max-rules"), "mode": Given("slow", f"{conf}:4"),
                     "listen": Given("127.0.0.1:80", f"{conf}:5"), "no-auth": Given("yes", "--no-auth")}
    assert options.convert(given, TABLE, quote=True) == {
        "max_rules": 7, "mode": "slow", "listen": Endpoint("127.0.0.1", 80), "no_auth": True}
    assert args.debug == 2 and not args.syslog and args.log_file is None


def test_a_default_file_may_be_missing_a_named_one_not(tmp_path):
    assert parse([])[1] == {}
    with pytest.raises(ConfigError, match=r"/nowhere\.conf: no such file"):
        parse(["-c", str(tmp_path / "nowhere.conf")])
    with pytest.raises(ConfigError, match=f"^{tmp_path}: .*Is a directory"):
        parse(["-c", str(tmp_path)])
    default = tmp_path / "default.conf"
    default.write_text("mode = fast\n")
    assert parse([], str(default))[1] == {"mode": Given("fast", f"{default}:1")}


@pytest.mark.parametrize("text, message", [
    ("mode = fast\nfrobnicate = 1\n", ":2: unknown setting 'frobnicate'"),
    ("\nmode\n", ":2: expected 'name = value'"),
    ("mode =\n", ":1: expected 'name = value'"),
])
def test_file_errors_name_the_line(tmp_path, text, message):
    conf = tmp_path / "svc.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as refused:
        parse(["-c", str(conf)])
    assert str(refused.value) == f"{conf}{message}"


def test_the_two_wordings_of_a_bad_value():
    """Quoting (hsagent-acld's): the text and what was expected; else (hsagent-controller's)
    the problem as the converter words it, naming the value itself."""
    bad = {"max-rules": Given("0", "x.conf:3")}
    with pytest.raises(ConfigError, match=r"^x\.conf:3: max-rules '0': expected 1-1000$"):
        options.convert(bad, TABLE, quote=True)
    with pytest.raises(ConfigError, match=r"^x\.conf:3: max-rules: 0 is not in 1-1000$"):
        options.convert(bad, TABLE, quote=False)
    with pytest.raises(ConfigError, match=r"^--mode: mode 'medium': expected one of fast, slow$"):
        options.convert({"mode": Given("medium", "--mode")}, TABLE, quote=True)
    with pytest.raises(ConfigError, match=r"^--max-rules: max-rules: invalid literal"):
        options.convert({"max-rules": Given("lots", "--max-rules")}, TABLE, quote=False)


def test_converters():
    assert options.ranged(0.0, 60.0, float)("0.5") == 0.5
    with pytest.raises(options.OutOfRange):
        options.ranged(0.0, 60.0, float)("60.1")
    assert [options.boolean(t) for t in ("yes", "ON", "true", "1", "no", "Off", "false", "0")] == \
        [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match="expected yes or no"):
        options.boolean("maybe")


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:80", ("::1", 80)),
    ("[::]:6343", ("", 6343)), (":6343", ("", 6343)), (" 198.18.0.1:0 ", ("198.18.0.1", 0)),
])
def test_endpoints(text, expected):
    assert options.endpoint(text) == expected


@pytest.mark.parametrize("text", ["localhost:80", "6343", "::1:80", "[::1]", "1.2.3:80",
                                  "1.2.3.4:65536", "[fe80::1%eth0]:80"])
def test_bad_endpoints(text):
    with pytest.raises(ValueError, match="expected ADDRESS:PORT"):
        options.endpoint(text)


@given(st.one_of(st.ip_addresses().map(str).filter(lambda a: a != "::"), st.just("")),
       st.integers(0, 65535))
def test_an_endpoint_reads_back_as_it_prints(host, port):  # '::' reads back as 
    written = Endpoint(host, port)
    assert options.endpoint(str(written)) == written


def test_log_file(tmp_path):
    log_file = tmp_path / "svc.log"
    args, _ = parse(["--log-file", str(log_file)])
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        options.setup_logging(args)
        logging.getLogger("hsagent.test").info("into the file")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = kept
        root.setLevel(level)
    assert "INFO hsagent.test: into the file" in log_file.read_text()


# --- bearer tokens -------------------------------------------------------------------------------

TOKENS = Tokens({WRITER: True, READER: False})


@pytest.mark.parametrize("authorization, method, status, challenge", [
    (None, "GET", 401, 'Bearer realm="svc"'),
    ("Basic dXNlcjpwdw==", "GET", 401, 'Bearer realm="svc"'),
    ("Bearer not-a-token-we-know", "GET", 401, 'Bearer realm="svc", error="invalid_token"'),
    (f"Bearer {READER}", "PUT", 403, 'Bearer realm="svc", error="insufficient_scope"'),
])
def test_refusals(authorization, method, status, challenge):
    refused = bearer_refusal(TOKENS, authorization, method, "svc")
    assert refused is not None
    assert refused[0] == status and refused[2] == {"WWW-Authenticate": challenge}


@pytest.mark.parametrize("authorization, method", [
    (f"Bearer {READER}", "GET"), (f"Bearer {READER}", "HEAD"), (f"bearer {WRITER}", "DELETE")])
def test_allowed(authorization, method):
    assert bearer_refusal(TOKENS, authorization, method, "svc") is None


# --- serving -------------------------------------------------------------------------------------

async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": request.method})


def application(tokens) -> web.Application:
    app = web.Application(middlewares=[bearer_auth(lambda: tokens, "svc")])
    app.router.add_route("*", "/hello", hello)
    return app


def port_of(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


def test_served_over_tls_with_tokens_checked_first(certificate):
    cert, key = certificate
    client_context = ssl.create_default_context(cafile=cert)

    async def run():
        runner = await listen(application(TOKENS), Endpoint("127.0.0.1", 0), tls_context(cert, key))
        url = f"https://127.0.0.1:{port_of(runner)}"
        try:
            async with ClientSession() as session:
                async def status(path, method="GET", token=WRITER):
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with session.request(method, url + path, headers=headers,
                                               ssl=client_context) as response:
                        return response.status, await response.json()
                assert await status("/hello") == (200, {"hello": "GET"})
                assert await status("/hello", "POST", READER) == (
                    403, {"error": "this token may only read"})
                assert await status("/elsewhere", token=None) == (
                    401, {"error": "a valid bearer token is needed"})
                with pytest.raises(ClientError):  # plain HTTP is not answered
                    async with session.get(f"http://127.0.0.1:{port_of(runner)}/hello"):
                        pass
        finally:
            await runner.cleanup()
    asyncio.run(run())


def test_no_tokens_serves_anyone_and_a_taken_port_is_an_oserror():
    async def run():
        runner = await listen(application(None), Endpoint("127.0.0.1", 0), None)
        port = port_of(runner)
        try:
            async with ClientSession() as session:
                async with session.put(f"http://127.0.0.1:{port}/hello") as response:
                    assert response.status == 200
            with pytest.raises(OSError):
                await listen(application(None), Endpoint("127.0.0.1", port), None)
            await stop_listening(runner)
            with pytest.raises(OSError):  # no longer listening
                socket.create_connection(("127.0.0.1", port), 2).close()
        finally:
            await runner.cleanup()
    asyncio.run(run())


def test_no_tls_without_a_certificate():
    assert tls_context(None, None) is None


def test_signals():
    reloads = []

    async def run():
        stop = until_stopped(reload=lambda: reloads.append(True))
        loop = asyncio.get_running_loop()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):
                if reloads:
                    break
                await asyncio.sleep(0.1)
            assert reloads and not stop.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), 10)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
    asyncio.run(run())
