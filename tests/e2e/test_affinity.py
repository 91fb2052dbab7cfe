#!/usr/bin/env python3
"""Session affinity end to end (issue 5).

Cookie affinity (`affinity: {cookie: LBSRV, secret, max_age}`): 100 clients
x 20 requests on fresh connections each stay on one server and their
/session counters count 1..20; the Set-Cookie's attributes and the token
(HMAC of the server id, nothing in clear); the cookie never reaches the
backend while the other cookies and the backend's own Set-Cookie pass
byte-identical; a sticky server taken down (health) or killed: its clients
move once, get a new cookie and stay (no flip-back); a sticky server at its
max_conns keeps its clients; forged, empty, oversized, duplicated,
malformed and other-secret tokens are rebalanced, never a 5xx; a token
survives reordering the server list and works on another lb process with
the same config.

Consistent hashing (`balance: hash`): the same X-User -> server mapping
from two lb processes and after a restart; one server down moves only its
users (and they come back when it does); hash_key uri, query:NAME,
cookie:NAME and source; requests without the key go round robin; bounded
load spills a hot key's excess to other servers with factor 1.25 and not
with factor 0; a client with one request at a time is not moved by bounded
load.

Two of these fail against lb as of this writing, on purpose (lb bugs, see
docs/AFFINITY.md "Known issues"):
test_cookie_sticky_server_at_max_conns_keeps_its_clients and
test_hash_sequential_client_keeps_its_server_default_factor."""
import random
import threading
import time

import affinity_lib as A
import lbtest as T
from lbtest import check, check_eq

SECRET = A.SECRET


def web_backends(n=3):
    return T.start_backends(n, prefix="web")


def tokens_of(bs, secret=SECRET):
    return {A.token_for(secret, b.ident): b.ident for b in bs}


# ---- cookie affinity ----------------------------------------------------------


def test_cookie_100_clients_x_20_requests():
    bs = web_backends(3)
    lb = A.start(A.ids(bs), affinity=True)
    tokens = tokens_of(bs)
    forbidden = ["127.0.0.1"] + [str(b.port) for b in bs] + [b.ident for b in bs]

    def client(i):
        jar = A.Jar()
        servers, sids, counts = set(), set(), []
        for k in range(20):
            r, server, sid, count = A.session_get(lb.port, jar)
            servers.add(server)
            sids.add(sid)
            counts.append(count)
            ac = A.affinity_cookies(r)
            if k == 0:
                check_eq(len(ac), 1, "client %d: affinity Set-Cookies on its first answer" % i)
                name, value, attrs = A.parse_set_cookie(ac[0])
                check_eq(attrs, ["Path=/", "HttpOnly", "SameSite=Lax"],
                         "client %d: attributes of %r" % (i, ac[0]))
                check(A.TOKEN_RE.match(value), "client %d: token %r is not 22 base64url "
                      "characters" % (i, value))
                for f in forbidden:
                    check(f not in ac[0], "client %d: %r in clear in %r" % (i, f, ac[0]))
                check_eq(tokens.get(value), server,
                         "client %d: the server the token names (HMAC of its id)" % i)
            else:
                check_eq(ac, [], "client %d request %d: a new affinity cookie although the "
                         "one sent names the server that answered" % (i, k + 1))
        check_eq(len(servers), 1, "client %d: servers seen %s" % (i, sorted(servers)))
        check_eq(len(sids), 1, "client %d: session ids" % i)
        check_eq(counts, list(range(1, 21)), "client %d: /session counts" % i)
        return servers.pop()

    owners = A.parallel(client, list(range(100)), threads=10)
    spread = {b.ident: owners.count(b.ident) for b in bs}
    check(all(n >= 15 for n in spread.values()),
          "100 new clients are balanced over the 3 servers: %s" % spread)
    lines = lb.wait_access(2000)
    check_eq(len([l for l in lines if T.parse_access(l)["status"] == "200"]), 2000,
             "2000 requests logged with 200")


def echoed_cookie_lines(r):
    """The Cookie header lines the backend received (from /echo's body)."""
    head = r.body.split(b"\r\n\r\n", 1)[0].decode()
    return [l for l in head.split("\r\n")[1:] if l.lower().startswith("cookie:")]


def test_cookie_stripped_other_cookies_byte_identical():
    bs = web_backends(3)
    lb = A.start(A.ids(bs), affinity=True)
    tok2 = A.token_for(SECRET, "web2")

    cases = [
        # (Cookie header lines sent, Cookie lines the backend must get)
        (['a=1; LBSRV=%s; theme="dark blue"; z=' % tok2], ['a=1; theme="dark blue"; z=']),
        (["LBSRV=%s" % tok2], []),
        (["a=1;  LBSRV=%s ;b=x=y" % tok2], ["a=1; b=x=y"]),
        (["LBSRV2=x; lbsrv=y; LBSRV=%s; xLBSRV=z" % tok2], ["LBSRV2=x; lbsrv=y; xLBSRV=z"]),
        (["a=1", "LBSRV=%s; b=2" % tok2], ["a=1", "b=2"]),
    ]
    for sent, want in cases:
        r = A.get(lb.port, "/echo", [("Cookie", v) for v in sent])
        check_eq(r.status, 200, "status for Cookie %r" % sent)
        check_eq(A.server_of(r), "web2", "a valid token for web2 picks web2 (%r)" % sent)
        check_eq(A.affinity_cookies(r), [], "no new cookie when it names the server (%r)" % sent)
        check_eq([l.split(":", 1)[1].strip() for l in echoed_cookie_lines(r)], want,
                 "Cookie lines the backend got for %r" % sent)
        check(b"LBSRV=" + tok2.encode() not in r.body, "the token reached the backend")

    # Without the affinity cookie the header passes verbatim, odd spacing included.
    odd = 'a=1;b=2;   c="x y" ;d'
    r = A.get(lb.port, "/echo", [("Cookie", odd)])
    check_eq(r.status, 200, "status")
    check_eq([l.split(":", 1)[1].lstrip() for l in echoed_cookie_lines(r)], [odd],
             "a Cookie header without the affinity cookie")
    check_eq(len(A.affinity_cookies(r)), 1, "a fresh affinity cookie")

    # The backend's own Set-Cookie passes through next to lb's.
    jar = A.Jar()
    r, server, sid, count = A.session_get(lb.port, jar)
    check_eq(count, 1, "first /session count")
    setc = r.all("set-cookie")
    check_eq(len(setc), 2, "Set-Cookie headers: %r" % setc)
    check("sid=%s; Path=/" % sid in setc, "the backend's Set-Cookie byte-identical: %r" % setc)
    check_eq(len(A.affinity_cookies(r)), 1, "lb's Set-Cookie")


def establish(port, n, requests=3):
    """n clients with a session each: [(jar, server, last count)]."""
    def one(i):
        jar = A.Jar()
        for k in range(requests):
            _, server, _, count = A.session_get(port, jar)
        check_eq(count, requests, "client %d count" % i)
        return [jar, server, count]
    return A.parallel(one, list(range(n)), threads=6)


def moved_once_then_stay(port, clients, victim, tokens, what):
    """Every client of `victim`: its next request lands on another server with
    a new cookie naming it (a new session there); then it stays. The others
    are not disturbed."""
    for c in clients:
        jar, server, count = c
        r, now, _, n = A.session_get(port, jar)
        ac = A.affinity_cookies(r)
        if server == victim:
            check(now != victim, "%s: a client of %s still served by it" % (what, victim))
            check_eq(len(ac), 1, "%s: a new affinity cookie for the moved client" % what)
            check_eq(tokens.get(A.parse_set_cookie(ac[0])[1]), now,
                     "%s: the new cookie names the new server" % what)
            check_eq(n, 1, "%s: a new session on the new server" % what)
        else:
            check_eq(now, server, "%s: a client of %s moved" % (what, server))
            check_eq(ac, [], "%s: a client of a working server got a new cookie" % what)
            check_eq(n, count + 1, "%s: its session count" % what)
        c[1], c[2] = now, n
    for c in clients:  # and they stay
        jar, server, count = c
        for _ in range(2):
            r, now, _, n = A.session_get(port, jar)
            check_eq(now, server, "%s: a client moved again" % what)
            check_eq(A.affinity_cookies(r), [], "%s: a cookie again" % what)
            check_eq(n, count + 1, "%s: the count on its new server" % what)
            count = n
        c[2] = count


def no_flip_back(port, clients, victim, what):
    for jar, server, count in clients:
        r, now, _, n = A.session_get(port, jar)
        check_eq(now, server, "%s: no flip-back once %s returned" % (what, victim))
        check_eq(n, count + 1, "%s: the session continues" % what)
    seen = {A.server_of(A.get(port, "/")) for _ in range(12)}
    check(victim in seen, "%s: %s takes new clients again (%s)" % (what, victim, sorted(seen)))


def test_cookie_server_health_down_then_up_no_flip_back():
    bs = web_backends(3)
    lb = A.start(A.ids(bs), affinity=True, health=True)
    tokens = tokens_of(bs)
    clients = establish(lb.port, 30)
    victim = bs[0]
    check(any(c[1] == victim.ident for c in clients), "the victim has clients")
    A.set_health(victim, "down")
    A.wait_change(lb, victim.ident, "DOWN", A.HEALTH_DOWN_WITHIN)
    moved_once_then_stay(lb.port, clients, victim.ident, tokens, "health down")
    A.set_health(victim, "up")
    A.wait_change(lb, victim.ident, "UP", A.HEALTH_UP_WITHIN)
    no_flip_back(lb.port, clients, victim.ident, "health up")


def test_cookie_server_killed_then_restarted_no_flip_back():
    bs = web_backends(3)
    # Generous retry budget: what is tested is where the moved clients go, not
    # the budget (a request for a dead server is retried on another one).
    lb = A.start(A.ids(bs), affinity=True, health=True,
                 extra={"retry_budget": "{ percent: 100, min_per_second: 1000 }"})
    tokens = tokens_of(bs)
    clients = establish(lb.port, 30)
    victim = bs[1]
    port = victim.port
    check(any(c[1] == victim.ident for c in clients), "the victim has clients")
    victim.kill()
    victim.checked = True
    # At once, before the health checks notice: the retry lands elsewhere.
    moved_once_then_stay(lb.port, clients, victim.ident, tokens, "killed")
    A.wait_change(lb, victim.ident, "DOWN", A.HEALTH_DOWN_WITHIN)
    T.Backend(victim.ident, port=port)
    A.wait_change(lb, victim.ident, "UP", A.HEALTH_UP_WITHIN + 1)
    no_flip_back(lb.port, clients, victim.ident, "restarted")


def test_cookie_sticky_server_at_max_conns_keeps_its_clients():
    """A sticky server that is up but at its max_conns is still the client's
    server: the request waits for a slot (timeouts.queue, default 2s) as the
    issue says ("goes to that server while it is up"), rather than moving
    the session to another server for good with a new cookie."""
    bs = web_backends(2)
    lb = T.start_lb_text(lambda port: A.config(port, A.ids(bs), affinity=True).replace(
        "address: %s }" % bs[0].address, "address: %s, max_conns: 1 }" % bs[0].address))
    cookie = [("Cookie", "LBSRV=" + A.token_for(SECRET, "web1"))]
    busy = []
    t = threading.Thread(target=lambda: busy.append(
        A.get(lb.port, "/delay?ms=800", cookie, timeout=10)), daemon=True)
    t.start()
    T.wait_for(lambda: T.established_to(bs[0].port) >= 1, 5, "the slow request at web1")
    time.sleep(0.1)
    r = A.get(lb.port, "/", cookie, timeout=10)
    t.join(10)
    check(busy and busy[0].status == 200 and A.server_of(busy[0]) == "web1",
          "the slow request on web1: %r" % busy)
    check_eq((r.status, A.server_of(r), A.affinity_cookies(r)), (200, "web1", []),
             "a client of web1 while web1 is at max_conns (status, server, new cookies)")


def test_bad_tokens_are_rebalanced_never_5xx():
    bs = web_backends(3)
    lb = A.start(A.ids(bs), affinity=True)
    tokens = tokens_of(bs)
    good = A.token_for(SECRET, "web1")
    other = A.token_for(SECRET, "web2")
    rnd = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    variants = {
        "forged random": ["LBSRV=" + "".join(rnd.choice(alphabet) for _ in range(22))],
        "forged one char changed": ["LBSRV=" + flipped],
        "empty": ["LBSRV="],
        "empty, spaces": ["LBSRV=  ; a=1"],
        "no equals sign": ["LBSRV"],
        "oversized 4 KB": ["LBSRV=" + "A" * 4096],
        "oversized 4 KB of a valid token": ["LBSRV=" + good * 187],
        "duplicated a/b": ["LBSRV=a; LBSRV=b"],
        "duplicated same valid token": ["LBSRV=%s; LBSRV=%s" % (good, good)],
        "duplicated two valid tokens": ["LBSRV=%s; LBSRV=%s" % (good, other)],
        "duplicated over two headers": ["LBSRV=" + good, "a=1; LBSRV=" + other],
        "quoted": ['LBSRV="%s"' % good],
        "one char longer": ["LBSRV=" + good + "A"],
        "one char shorter": ["LBSRV=" + good[:-1]],
        "base64 padding": ["LBSRV=" + good + "=="],
        "bad alphabet": ["LBSRV=" + good[:21] + "+"],
        "all slashes": ["LBSRV=" + "/" * 22],
        "id in clear": ["LBSRV=web1"],
        "address in clear": ["LBSRV=" + bs[0].address],
        "another secret": ["LBSRV=" + A.token_for("another-secret-0123456789", "web1")],
        "an unknown id": ["LBSRV=" + A.token_for(SECRET, "web9")],
        "null-ish": ["LBSRV=%00%00"],
    }
    for what, cookies in variants.items():
        for target in ("/echo", "/session"):
            r = A.get(lb.port, target, [("Cookie", v) for v in cookies])
            check_eq(r.status, 200, "%s on %s: status" % (what, target))
            ac = A.affinity_cookies(r)
            check_eq(len(ac), 1, "%s on %s: a fresh affinity cookie" % (what, target))
            check_eq(tokens.get(A.parse_set_cookie(ac[0])[1]), A.server_of(r),
                     "%s on %s: the fresh cookie names the server that answered" % (
                         what, target))
            if target == "/echo":
                for line in echoed_cookie_lines(r):
                    # (a piece without "=" is no cookie pair: it passes as sent)
                    names = [p.strip().partition("=")[0]
                             for p in line.split(":", 1)[1].split(";") if "=" in p]
                    check("LBSRV" not in names, "%s: the affinity cookie reached the backend: "
                          "%r" % (what, line[:120]))
    check(lb.alive(), "lb alive")


def collect_tokens(port, want):
    """Fresh requests until every server in `want` was seen: {server: token}."""
    got = {}
    for _ in range(60):
        r = A.get(port, "/")
        check_eq(r.status, 200, "status")
        ac = A.affinity_cookies(r)
        check_eq(len(ac), 1, "a cookie for a new client")
        got[A.server_of(r)] = A.parse_set_cookie(ac[0])[1]
        if set(got) == set(want):
            return got
    raise T.TestFailure("not every server seen: %s" % sorted(got))


def test_token_survives_reordering_and_other_lb_process():
    bs = web_backends(3)
    ids = A.ids(bs)
    lb1 = A.start(ids, affinity=True)
    lb2 = A.start(ids, affinity=True)  # a second process, same config
    got = collect_tokens(lb1.port, [b.ident for b in bs])
    for server, token in got.items():
        check_eq(token, A.token_for(SECRET, server), "the token of %s" % server)
        for lb, what in ((lb1, "lb1"), (lb2, "another lb process")):
            for _ in range(4):  # both workers
                r = A.get(lb.port, "/", [("Cookie", "LBSRV=" + token)])
                check_eq(A.server_of(r), server, "%s: the token of %s" % (what, server))
                check_eq(A.affinity_cookies(r), [], "%s: no new cookie" % what)
    lb1.expect_clean_exit()
    # Restarted with the servers in another order.
    for order in (list(reversed(ids)), [ids[1], ids[2], ids[0]]):
        lb3 = A.start(order, affinity=True)
        for server, token in got.items():
            r = A.get(lb3.port, "/", [("Cookie", "LBSRV=" + token)])
            check_eq(A.server_of(r), server, "order %s: the token of %s" % (
                [i for i, _ in order], server))
            check_eq(A.affinity_cookies(r), [], "order %s: no new cookie" % [i for i, _ in order])
        check_eq(collect_tokens(lb3.port, got), got, "tokens issued after reordering")
        lb3.expect_clean_exit()


# ---- consistent hashing ---------------------------------------------------------


def user_map(port, users, header="X-User", rounds=1):
    """user -> server, each user asked `rounds` times (sequentially), all
    answers the same."""
    out = {}
    for u in users:
        for k in range(rounds):
            r = A.get(port, "/", [(header, u)])
            check_eq(r.status, 200, "user %s status" % u)
            s = A.server_of(r)
            if k and out[u] != s:
                raise T.TestFailure("user %s went to %s, then %s" % (u, out[u], s))
            out[u] = s
    return out


def shares(mapping):
    out = {}
    for s in mapping.values():
        out[s] = out.get(s, 0) + 1
    return out


USERS = ["user-%04d" % i for i in range(200)]

# The mapping tests below run with hash_balance_factor: 0. Bounded load
# (default 1.25) moves a key off its server by design when that server has
# more than its share of the requests in flight, and at low load "its share"
# is 1: a key's request in flight there is enough (see
# test_hash_bounded_load_spills_hot_key and
# test_hash_sequential_client_keeps_its_server_default_factor).


def test_hash_header_same_mapping_two_processes_and_restart():
    bs = web_backends(3)
    kw = dict(balance="hash", hash_key="header:X-User", factor=0)
    lb1 = A.start(A.ids(bs), **kw)
    lb2 = A.start(A.ids(bs), **kw)
    m1 = user_map(lb1.port, USERS, rounds=2)
    sh = shares(m1)
    check(len(sh) == 3 and min(sh.values()) >= 40, "200 users over 3 servers: %s" % sh)
    m2 = user_map(lb2.port, USERS)
    diff = [u for u in USERS if m1[u] != m2[u]]
    check(not diff, "%d users mapped differently by a second lb process (e.g. %s: %s vs %s)" % (
        len(diff), diff[:1], m1.get(diff[0]) if diff else "", m2.get(diff[0]) if diff else ""))
    lb1.expect_clean_exit()
    lb3 = A.start(list(reversed(A.ids(bs))), **kw)  # restarted (servers reordered too)
    m3 = user_map(lb3.port, USERS)
    diff = [u for u in USERS if m1[u] != m3[u]]
    check(not diff, "%d users mapped differently after a restart" % len(diff))


def test_hash_one_server_down_moves_only_its_users():
    bs = web_backends(4)
    lb = A.start(A.ids(bs), balance="hash", hash_key="header:X-User", factor=0, health=True)
    before = user_map(lb.port, USERS)
    victim = bs[2].ident
    mine = [u for u in USERS if before[u] == victim]
    check(len(mine) >= 25, "the victim has users: %s" % shares(before))
    A.set_health(bs[2], "down")
    A.wait_change(lb, victim, "DOWN", A.HEALTH_DOWN_WITHIN)
    during = user_map(lb.port, USERS)
    others_moved = [u for u in USERS if before[u] != victim and during[u] != before[u]]
    # Maglev's disruption is minimal, not zero: a few other keys may move
    # (0.2-0.3% of all keys, lb/maglev.h; the issue allows 1%). With these
    # ids and users (the mapping is deterministic) none does.
    check(len(others_moved) <= len(USERS) // 100,
          "%d of %d users of working servers moved when %s went down "
          "(e.g. %s: %s -> %s)" % (len(others_moved), len(USERS) - len(mine), victim,
                                   others_moved[:1], before.get(others_moved[0]) if
                                   others_moved else "", during.get(others_moved[0]) if
                                   others_moved else ""))
    check(all(during[u] != victim for u in mine), "a user still on the down server")
    check(len({during[u] for u in mine}) >= 2,
          "the down server's users spread over the others: %s" % shares(
              {u: during[u] for u in mine}))
    A.set_health(bs[2], "up")
    A.wait_change(lb, victim, "UP", A.HEALTH_UP_WITHIN)
    after = user_map(lb.port, USERS)
    back = [u for u in USERS if after[u] != before[u]]
    check(not back, "%d users not back on their server once %s returned" % (len(back), victim))


def test_hash_keys_uri_query_cookie_source_and_fallback():
    bs = web_backends(3)
    servers = A.ids(bs)
    kinds = {"uri": "uri", "query": "query:uid", "cookie": "cookie:uid", "source": "source",
             "header": "header:X-User"}
    backends = {k: dict(servers=servers, balance="hash", hash_key=v, factor=0)
                for k, v in kinds.items()}
    routes = [{"host": "%s.test" % k, "backend": k} for k in kinds]
    lb = T.start_lb_text(lambda port: A.config(port, backends=backends, routes=routes))

    def ask(kind, target="/", headers=None, source=None):
        r = A.get(lb.port, target, headers, source=source, host="%s.test" % kind)
        check_eq(r.status, 200, "%s %s status" % (kind, target))
        return A.server_of(r)

    def stable_and_spread(kind, variants_of):
        """variants_of(i): the requests (target, headers, source) that carry
        key i in different ways; all must land on one server, and 30 keys
        on more than one."""
        seen = set()
        for i in range(30):
            got = {ask(kind, *v) for v in variants_of(i) for _ in range(2)}
            check_eq(len(got), 1, "%s key %d: servers %s" % (kind, i, sorted(got)))
            seen |= got
        check(len(seen) >= 2, "%s: 30 keys all on %s" % (kind, seen))

    stable_and_spread("uri", lambda i: [("/echo/p%d?x=1" % i, None, None)])
    stable_and_spread("query", lambda i: [("/?uid=u%d" % i, None, None),
                                          ("/echo/a?z=1&uid=u%d" % i, None, None),
                                          ("/echo/b?uid=u%d&z=2" % i, None, None)])
    stable_and_spread("cookie", lambda i: [("/", [("Cookie", "uid=u%d" % i)], None),
                                           ("/echo", [("Cookie", "a=1; uid=u%d" % i)], None),
                                           ("/", [("Cookie", "uid=u%d; b=2" % i)], None)])
    stable_and_spread("source", lambda i: [("/", None, "127.0.0.%d" % (i + 2)),
                                           ("/echo/x", None, "127.0.0.%d" % (i + 2))])
    # Without the key (or with an empty one): round robin over every server.
    fallback = {
        "uri": None,
        "query": [("/?x=1", None), ("/?uid=", None), ("/?uidx=1", None)],
        "cookie": [("/", [("Cookie", "uidx=1")]), ("/", [("Cookie", "uid=")]), ("/", None)],
        "header": [("/", None), ("/", [("X-User", "")])],
    }
    for kind, reqs in fallback.items():
        if not reqs:
            continue
        for target, headers in reqs:
            got = [ask(kind, target, headers) for _ in range(12)]
            spread = {s: got.count(s) for s in set(got)}
            check(len(spread) == 3 and max(spread.values()) <= 6,
                  "%s without its key (%s %s): round robin expected, got %s" % (
                      kind, target, headers, spread))


def test_hash_bounded_load_spills_hot_key():
    bs = web_backends(3)
    servers = A.ids(bs)
    backends = {
        "bounded": dict(servers=servers, balance="hash", hash_key="header:X-User", factor=1.25),
        "unbounded": dict(servers=servers, balance="hash", hash_key="header:X-User", factor=0),
    }
    routes = [{"host": "%s.test" % k, "backend": k} for k in backends]
    lb = T.start_lb_text(lambda port: A.config(port, backends=backends, routes=routes))
    n = 12

    def burst(kind):
        home = A.server_of(A.get(lb.port, "/", [("X-User", "hot")], host=kind + ".test"))

        def one(i):
            r = A.get(lb.port, "/delay?ms=1500", [("X-User", "hot")], host=kind + ".test",
                      timeout=20)
            check_eq(r.status, 200, "%s: /delay status" % kind)
            return A.server_of(r)
        got = A.parallel(one, list(range(n)), threads=n)
        return home, {s: got.count(s) for s in set(got)}

    home, spread = burst("bounded")
    check(len(spread) >= 2, "factor 1.25: all %d concurrent requests of the hot key on %s" % (
        n, spread))
    # ceil(1.25 x 12 / 3) = 5: the home server never holds more of them.
    check(spread.get(home, 0) <= 5, "factor 1.25: the home server %s took %s" % (home, spread))
    home0, spread0 = burst("unbounded")
    check_eq(spread0, {home0: n}, "factor 0: every request of the key on its server")


def test_hash_sequential_client_keeps_its_server_default_factor():
    """A client sending one request at a time, each after the previous
    answer arrived, has nothing in flight when it sends: with the default
    hash_balance_factor its key must stay on its server. A slowly read
    access log (a FIFO) widens the moment between lb sending a response and
    counting the request out of flight; the bound must not see an answered
    request as load."""
    bs = web_backends(3)
    log = A.SlowLog(0.03)
    lb = T.start_lb_text(lambda port: A.config(port, A.ids(bs), balance="hash", workers=4,
                                               hash_key="header:X-User", access=log.path))
    moves = []
    try:
        for u in range(8):
            prev = None
            for k in range(25):
                r = A.get(lb.port, "/", [("X-User", "seq-%d" % u)])
                check_eq(r.status, 200, "status")
                s = A.server_of(r)
                if prev and s != prev:
                    moves.append("seq-%d request %d: %s -> %s" % (u, k + 1, prev, s))
                prev = s
    finally:
        log.drain()
    check(not moves, "%d of 200 sequential requests (8 keys, one request in flight at a time, "
          "default hash_balance_factor) left their key's server; first: %s" % (
              len(moves), moves[:3]))


if __name__ == "__main__":
    T.run([
        test_cookie_100_clients_x_20_requests,
        test_cookie_stripped_other_cookies_byte_identical,
        test_cookie_server_health_down_then_up_no_flip_back,
        test_cookie_server_killed_then_restarted_no_flip_back,
        test_cookie_sticky_server_at_max_conns_keeps_its_clients,
        test_bad_tokens_are_rebalanced_never_5xx,
        test_token_survives_reordering_and_other_lb_process,
        test_hash_header_same_mapping_two_processes_and_restart,
        test_hash_one_server_down_moves_only_its_users,
        test_hash_keys_uri_query_cookie_source_and_fallback,
        test_hash_bounded_load_spills_hot_key,
        test_hash_sequential_client_keeps_its_server_default_factor,
    ])
