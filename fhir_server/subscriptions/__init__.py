"""R4 Subscriptions: criteria evaluated from the outbox after commit, rest-hook and websocket
delivery at least once, retried with backoff, never on the write path.

`channel` validates what a client asks for; `matching` decides whether a change notifies (the
criteria search run on that one resource, inside what the owner may read); `service` is the
outbox consumer that queues notifications and runs the requested -> active handshake;
`delivery` sends the queue; `websocket` is the R4 websocket binding.
"""
