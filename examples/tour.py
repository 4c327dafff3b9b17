#!/usr/bin/env python3
"""A five-minute tour of omnigate: a customer on the web chat and an agent, over real websockets.

Start the gateway first (`cargo run --release -p omnigate-gateway`), then:

    pip install websockets
    python3 examples/tour.py

It plays both sides and prints what each one sees: offer and accept, messages both ways, an internal
note the customer never sees, a dropped customer socket that resumes from its cursor without losing or
repeating anything, a retried send answered with the identical ack, and the close.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid

import websockets


def log(side, text):
    print(f"[{side:8}] {text}", flush=True)


class Socket:
    """One websocket speaking omnigate's JSON frames, keeping frames it skipped for later reads."""

    def __init__(self, ws):
        self.ws, self.mailbox, self.refs = ws, [], 0

    @classmethod
    async def open(cls, url, token, resume=None):
        sock = cls(await websockets.connect(url))
        hello = {"token": token, "client": "tour/1"}
        if resume:
            hello["resume"] = resume
        await sock.send("hello", hello)
        return sock, await sock.wait(lambda f: f["op"] == "ready")

    async def send(self, op, d=None):
        self.refs += 1
        ref = f"r{self.refs}"
        frame = {"op": op, "ref": ref}
        if d is not None:
            frame["d"] = d
        await self.ws.send(json.dumps(frame))
        return ref

    async def wait(self, match, timeout=10):
        for i, frame in enumerate(self.mailbox):
            if match(frame):
                return self.mailbox.pop(i)
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if match(frame):
                return frame
            self.mailbox.append(frame)

    async def request(self, op, d):
        ref = await self.send(op, d)
        return await self.wait(lambda f: f.get("ref") == ref)


def text_of(event):
    return event["d"]["message"]["content"]["text"]


def is_message(frame, conversation, sender):
    d = frame.get("d", {})
    return (frame["op"] == "event" and d.get("conversation_id") == conversation
            and d.get("type") == "message.created" and d["actor"]["type"] == sender)


async def tour(base, agent_id, agent_token):
    ws_base = base.replace("http://", "ws://").replace("https://", "wss://")

    agent, ready = await Socket.open(f"{ws_base}/agent/v1/ws", agent_token)
    log("agent", f"connected as {ready['d']['agent']['name']} (session {ready['d']['session_id']})")
    await agent.request("presence.set", {"state": "available"})
    log("agent", "presence: available")

    request = urllib.request.Request(f"{base}/chat/v1/sessions", method="POST",
                                     data=json.dumps({"widget_key": "demo-widget-key"}).encode(),
                                     headers={"content-type": "application/json"})
    session = json.load(urllib.request.urlopen(request))
    log("customer", f"session opened: visitor {session['visitor_id']}, token valid until {session['expires_at']}")
    customer, ready = await Socket.open(session["ws_url"], session["token"])
    session_id = ready["d"]["session_id"]

    ack = await customer.request("message.send", {"client_msg_id": str(uuid.uuid4()), "content": {
        "type": "text", "text": "Hello, an ATM kept my card this morning."}})
    conversation = ack["d"]["conversation_id"]
    log("customer", f"sent, acked as seq {ack['d']['seq']} in {conversation}")

    offer = await agent.wait(lambda f: f["op"] == "offer")
    log("agent", f"offer: {offer['d']['preview']!r} (expires in {offer['d']['expires_in_ms']} ms)")
    await agent.request("offer.accept", {"conversation_id": conversation})
    first = await agent.wait(lambda f: is_message(f, conversation, "customer"))
    log("agent", f"accepted; history shows the customer said {text_of(first)!r}")

    await agent.request("note.send", {"conversation_id": conversation, "client_msg_id": str(uuid.uuid4()),
                                      "text": "card retained at ATM 0042; check with the branch"})
    log("agent", "internal note added (agents only)")
    await agent.request("message.send", {"conversation_id": conversation, "client_msg_id": str(uuid.uuid4()),
                                         "content": {"type": "text", "text": "I'm sorry! Which branch was it?"}})
    reply = await customer.wait(lambda f: is_message(f, conversation, "agent"))
    cursor = reply["d"]["seq"]
    log("customer", f"{reply['d']['message']['sender']['name']}: {text_of(reply)!r} (seq {cursor})")

    log("customer", "network drops: the socket is gone without a goodbye")
    await customer.ws.close()
    for text in ["We have blocked the card to be safe.", "A new one is on its way.", "Anything else?"]:
        await agent.request("message.send", {"conversation_id": conversation, "client_msg_id": str(uuid.uuid4()),
                                             "content": {"type": "text", "text": text}})
    log("agent", "sent 3 messages while the customer was away")

    customer, ready = await Socket.open(session["ws_url"], session["token"],
                                        {"session_id": session_id, "cursors": {conversation: cursor}})
    log("customer", f"reconnected, resumed={ready['d']['resumed']}, cursor {cursor}")
    for _ in range(3):
        event = await customer.wait(lambda f: is_message(f, conversation, "agent"))
        log("customer", f"  replayed seq {event['d']['seq']}: {text_of(event)!r}")

    msg = {"conversation_id": conversation, "client_msg_id": "retry-demo-1",
           "content": {"type": "text", "text": "No, that's all, thank you!"}}
    first_ack = await customer.request("message.send", msg)
    second_ack = await customer.request("message.send", msg)
    same = first_ack["d"] == second_ack["d"]
    log("customer", f"sent once, retried once: identical acks={same}, message {first_ack['d']['message_id']}")
    await agent.wait(lambda f: is_message(f, conversation, "customer") and text_of(f).startswith("No, that's all"))

    await agent.request("conversation.close", {"conversation_id": conversation, "disposition": "card_replaced"})
    closed = await customer.wait(lambda f: f["op"] == "event" and f["d"]["type"] == "conversation.closed")
    log("customer", f"conversation closed at seq {closed['d']['seq']} (the disposition code stays internal)")

    events = json.load(urllib.request.urlopen(urllib.request.Request(
        f"{base}/chat/v1/conversations/{conversation}/events?after_seq=0",
        headers={"authorization": f"Bearer {session['token']}"})))
    kinds = [e["type"] for e in events["events"]]
    log("customer", f"the customer's log: {len(kinds)} events, gapless seq 1..{events['last_seq']}, no note: "
                    f"{'note.created' not in kinds}")
    await customer.ws.close()
    await agent.ws.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--agent", default="lin")
    parser.add_argument("--agent-token", help="default: minted with `cargo run -p omnigate-gateway -- token`")
    args = parser.parse_args()
    token = args.agent_token or subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "omnigate-gateway", "--", "token", "--agent", args.agent],
        check=True, capture_output=True, text=True).stdout.strip()
    try:
        asyncio.run(tour(args.gateway, args.agent, token))
    except (ConnectionRefusedError, OSError) as error:
        sys.exit(f"cannot reach the gateway at {args.gateway}: {error}; start it with "
                 "`cargo run --release -p omnigate-gateway`")


if __name__ == "__main__":
    main()
