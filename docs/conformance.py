#!/usr/bin/env python3
"""Regenerates docs/conformance.md from the [MQTT-x.y.z-n] tags in the code
and tests: `python3 docs/conformance.py > docs/conformance.md`.
TestConformanceDoc (engine/conformance_test.go) fails when the file is stale."""
import os, re, sys, collections

RULES = {
 "MQTT-1.5.3-1": "UTF-8 strings are well-formed, no surrogates",
 "MQTT-1.5.3-2": "UTF-8 strings contain no U+0000",
 "MQTT-1.5.3-3": "a BOM (U+FEFF) is not skipped or stripped",
 "MQTT-1.5.4-1": "5.0: UTF-8 strings are well-formed, no surrogates",
 "MQTT-1.5.4-2": "5.0: UTF-8 strings contain no U+0000",
 "MQTT-1.5.5-1": "variable byte integers use at most 4 bytes, minimally encoded",
 "MQTT-2.2.2-1": "reserved fixed-header flags carry their listed values",
 "MQTT-2.2.2-2": "invalid flags / duplicate properties close the connection",
 "MQTT-2.3.1-1": "PUBLISH (QoS>0), SUBSCRIBE, UNSUBSCRIBE carry a non-zero packet id",
 "MQTT-2.3.1-2": "a new packet id is one not in use",
 "MQTT-3.1.0-1": "the first packet is CONNECT",
 "MQTT-3.1.0-2": "a second CONNECT is a protocol violation",
 "MQTT-3.1.2-1": "unknown protocol name: disconnect",
 "MQTT-3.1.2-2": "unsupported protocol level: CONNACK 0x01 and disconnect",
 "MQTT-3.1.2-3": "reserved connect flag is zero",
 "MQTT-3.1.2-4": "clean session 0 resumes the stored session",
 "MQTT-3.1.2-5": "clean session 0: session kept after disconnect, messages queued",
 "MQTT-3.1.2-6": "clean session 1 discards the previous session",
 "MQTT-3.1.2-8": "the will is published when the connection ends without DISCONNECT",
 "MQTT-3.1.2-9": "the will topic is a valid topic name",
 "MQTT-3.1.2-11": "will QoS is 0 without the will flag",
 "MQTT-3.1.2-13": "will QoS/retain are 0 without the will flag",
 "MQTT-3.1.2-14": "will QoS is not 3",
 "MQTT-3.1.2-15": "will retain is 0 without the will flag",
 "MQTT-3.1.2-22": "3.1.1: password flag requires the username flag",
 "MQTT-3.1.2-24": "no packet for 1.5 x keep-alive: disconnect",
 "MQTT-3.1.3-4": "client id is a UTF-8 string",
 "MQTT-3.1.3-6": "zero-length client id: the server assigns one",
 "MQTT-3.1.3-8": "zero-length client id without clean session: CONNACK 0x02",
 "MQTT-3.1.3-9": "rejected client id: CONNACK 0x02",
 "MQTT-3.1.3-10": "will topic is a UTF-8 string",
 "MQTT-3.1.3-11": "user name is a UTF-8 string",
 "MQTT-3.1.4-1": "malformed CONNECT closes without CONNACK",
 "MQTT-3.1.4-2": "an existing connection with the same client id is closed (takeover)",
 "MQTT-3.2.2-1": "clean session 1: session present 0",
 "MQTT-3.2.2-2": "resumed session: session present 1",
 "MQTT-3.2.2-3": "no stored session: session present 0",
 "MQTT-3.3.1-1": "re-delivery sets DUP",
 "MQTT-3.3.1-2": "DUP is 0 for QoS 0",
 "MQTT-3.3.1-4": "PUBLISH QoS 3 is malformed",
 "MQTT-3.3.1-5": "RETAIN 1: the message is stored for the topic",
 "MQTT-3.3.1-6": "a new subscription receives the retained messages",
 "MQTT-3.3.1-8": "delivery caused by a new subscription has RETAIN 1",
 "MQTT-3.3.1-9": "delivery to an established subscription has RETAIN 0",
 "MQTT-3.3.1-10": "a zero-byte retained message removes the retained message",
 "MQTT-3.3.1-11": "a zero-byte retained message is not stored",
 "MQTT-3.3.2-1": "topic name is a UTF-8 string",
 "MQTT-3.3.2-2": "topic name contains no wildcards",
 "MQTT-3.3.2-8": "5.0: topic alias 0 is not permitted",
 "MQTT-3.3.2-14": "5.0: response topic contains no wildcards",
 "MQTT-3.3.5-1": "overlapping subscriptions: deliver once at the highest QoS",
 "MQTT-3.6.1-1": "PUBREL flags are 0010",
 "MQTT-3.8.1-1": "SUBSCRIBE flags are 0010",
 "MQTT-3.8.3-1": "topic filters are UTF-8 strings",
 "MQTT-3.8.3-3": "SUBSCRIBE carries at least one filter",
 "MQTT-3.8.3-4": "SUBSCRIBE reserved bits are 0 and QoS is 0..2",
 "MQTT-3.8.3-5": "5.0: subscription options reserved bits, retain handling 3",
 "MQTT-3.8.4-1": "SUBSCRIBE is answered with SUBACK",
 "MQTT-3.8.4-3": "an identical filter replaces the subscription; retained messages re-sent",
 "MQTT-3.8.4-4": "several filters are handled as several SUBSCRIBEs, one SUBACK",
 "MQTT-3.8.4-5": "one SUBACK return code per filter, granted QoS or 0x80",
 "MQTT-3.8.4-6": "delivered QoS = min(published, granted)",
 "MQTT-3.10.1-1": "UNSUBSCRIBE flags are 0010",
 "MQTT-3.10.3-2": "UNSUBSCRIBE carries at least one filter",
 "MQTT-3.10.4-1": "UNSUBSCRIBE deletes the subscription",
 "MQTT-3.10.4-4": "UNSUBSCRIBE is answered with UNSUBACK (same id)",
 "MQTT-3.10.4-5": "UNSUBACK even when nothing matched",
 "MQTT-3.12.4-1": "PINGREQ is answered with PINGRESP",
 "MQTT-3.14.4-1": "DISCONNECT ends the network connection",
 "MQTT-3.14.4-3": "DISCONNECT discards the will",
 "MQTT-6.0.0-1": "WebSocket: MQTT packets travel in binary frames; any other data frame closes the connection",
 "MQTT-6.0.0-2": "WebSocket: packets are not aligned with frames (a frame may hold part of one or several packets)",
 "MQTT-6.0.0-3": "WebSocket: the client offers the subprotocol mqtt",
 "MQTT-6.0.0-4": "WebSocket: the server selects and returns the subprotocol mqtt",
 "MQTT-3.15.2-1": "5.0: AUTH reason code is 0x00, 0x18 or 0x19",
 "MQTT-4.3.2-1": "QoS 1 sender: the PUBLISH is unacknowledged until its PUBACK (PUBREC/PUBCOMP for it close)",
 "MQTT-4.3.2-2": "QoS 1: PUBACK after taking ownership",
 "MQTT-4.3.3-1": "QoS 2 sender: PUBREC, then PUBCOMP after PUBREL (PUBACK, early PUBCOMP close)",
 "MQTT-4.3.3-2": "QoS 2 receiver: PUBREC until PUBREL, no duplicate delivery, PUBCOMP answers PUBREL",
 "MQTT-4.3.3-3": "QoS 2 sender: PUBREL answers PUBREC",
 "MQTT-4.4.0-1": "reconnect with clean session 0: unacknowledged PUBLISH and PUBREL re-sent",
 "MQTT-4.6.0-6": "topics are ordered: per-publisher order kept",
 "MQTT-4.7.1-1": "wildcards are not used in topic names",
 "MQTT-4.7.1-2": "# is last and alone in its level",
 "MQTT-4.7.1-3": "+ fills a whole level",
 "MQTT-4.7.2-1": "filters starting with a wildcard do not match $ topics",
 "MQTT-4.7.3-1": "topics are at least one character",
 "MQTT-4.7.3-2": "topics contain no U+0000",
 "MQTT-4.8.0-1": "a protocol violation closes the network connection",
 "MQTT-4.8.2-1": "5.0: $share/{group}/{filter}: group and filter non-empty",
 "MQTT-4.8.2-2": "5.0: share name contains no / + #",
 "MQTT5-3.1.2-24": "5.0: no packet above the client's Maximum Packet Size is sent",
 "MQTT5-3.1.2-25": "5.0: a message too large for the client is discarded as if sent",
 "MQTT5-3.1.2-26": "5.0: no topic alias above the client's Topic Alias Maximum",
 "MQTT5-3.1.2-29": "5.0: Request Problem Information 0: no reason string",
 "MQTT5-3.1.3-9": "5.0: a new connection before the will delay cancels the will",
 "MQTT5-3.2.2-16": "5.0: an assigned client identifier is sent in CONNACK",
 "MQTT5-3.2.2-21": "5.0: Server Keep Alive replaces the client's keep-alive",
 "MQTT5-3.3.1-12": "5.0: Retain As Published 0: RETAIN cleared on forwarding",
 "MQTT5-3.3.1-13": "5.0: Retain As Published 1: RETAIN kept on forwarding",
 "MQTT5-3.3.2-4": "5.0: the payload format indicator is forwarded unaltered",
 "MQTT5-3.3.2-5": "5.0: an expired message is not delivered",
 "MQTT5-3.3.2-6": "5.0: the message expiry sent is the time left",
 "MQTT5-3.3.2-7": "5.0: topic aliases are not carried across connections",
 "MQTT5-3.3.2-9": "5.0: a client topic alias above the server's maximum is an error",
 "MQTT5-3.3.2-11": "5.0: server aliases stay within the client's maximum",
 "MQTT5-3.3.2-12": "5.0: the server accepts every alias up to its maximum",
 "MQTT5-3.3.2-15": "5.0: the response topic is forwarded unaltered",
 "MQTT5-3.3.2-16": "5.0: correlation data is forwarded unaltered",
 "MQTT5-3.3.2-17": "5.0: user properties are forwarded unaltered",
 "MQTT5-3.3.2-18": "5.0: user properties keep their order",
 "MQTT5-3.3.2-20": "5.0: the content type is forwarded unaltered",
 "MQTT5-3.3.4-3": "5.0: subscription identifiers come with the matching PUBLISH",
 "MQTT5-3.3.4-5": "5.0: one copy per subscription, each with its own identifier",
 "MQTT5-3.3.4-9": "5.0: no more QoS 1/2 in flight than the client's Receive Maximum",
 "MQTT5-3.8.3-3": "5.0: No Local: not delivered to the publisher's own subscription",
 "MQTT5-3.8.3-4": "5.0: No Local on a shared subscription is a protocol error",
 "MQTT5-3.11.3-1": "5.0: UNSUBACK has one reason code per filter",
 "MQTT5-3.14.2-2": "5.0: session expiry 0 at CONNECT cannot be raised at DISCONNECT",
 "MQTT5-4.12.0-1": "5.0: unsupported authentication method: CONNACK 0x8C and close",
 "MQTT5-4.12.1-1": "5.0: re-authentication uses the CONNECT's method",
 "MQTT5-4.13.1-1": "5.0: a malformed packet or protocol error is answered with DISCONNECT",
 "MQTT5-4.13.2-1": "5.0: the server sends DISCONNECT with a reason code before closing",
}

tag = re.compile(r"MQTT5?-\d+(?:\.\d+)*-\d+")
func_re = re.compile(r"^(?:func (?:\([^)]*\) )?|const |var |type )([A-Za-z0-9_]+)")
code, tests = collections.defaultdict(set), collections.defaultdict(set)
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for d, _, files in os.walk(root):
    if "/." in d:
        continue
    for f in sorted(files):
        if not f.endswith(".go"):
            continue
        path = os.path.join(d, f)
        rel = os.path.relpath(path, root)
        lines = open(path, encoding="utf-8").read().split("\n")
        # A tag in a doc comment belongs to the function that follows it.
        owner, fn, pending = [], "(package)", []
        for line in lines:
            m = func_re.match(line)
            if m:
                fn = m.group(1)
                owner.extend([fn] * (len(pending) + 1))
                pending = []
            elif line.startswith("//"):
                pending.append(line)
            else:
                owner.extend([fn] * (len(pending) + 1))
                pending = []
        owner.extend([fn] * len(pending))
        for line, fn in zip(lines, owner):
            for t in tag.findall(line):
                if f.endswith("_test.go") or "codectest" in rel:
                    tests[t].add(fn if f.endswith("_test.go") else rel.split("/")[-1])
                else:
                    code[t].add(f"{rel}:{fn}")

def key(t):
    five = t.startswith("MQTT5-")
    return [int(x) for x in re.split(r"[.-]", t.split("-", 1)[1])] + [1 if five else 0]

out = sys.stdout
out.write("# Conformance map\n\nEvery MQTT normative statement the code enforces, tagged `[MQTT-x.y.z-n]` at\n"
          "the line that enforces it, with the tests that cover it. Generated by\n"
          "`python3 docs/conformance.py > docs/conformance.md`; `TestConformanceDoc`\n"
          "fails when it is stale. Ids follow MQTT 3.1.1 numbering; MQTT 5.0's own\n"
          "numbering is tagged `[MQTT5-x.y.z-n]` (the 5.0 specification's MQTT-x.y.z-n).\n"
          "Golden vectors (codec/codectest) name their ids too; TestBadVectors runs them.\n\n"
          "| id | rule | code | tests |\n| --- | --- | --- | --- |\n")
for t in sorted(set(code) | set(tests), key=key):
    c = "<br>".join(sorted(code.get(t, []))) or "—"
    ts = ", ".join(sorted(tests.get(t, []))) or "—"
    out.write(f"| {t} | {RULES.get(t, '')} | {c} | {ts} |\n")
