"""KYT intake by rules: MCE's payment webhooks with a KYT result become refund intents.

- ``detector``: reads a payment webhook's KYT marker by the paths the settings give;
- ``rules``: the rules file (validated whole) and the pure decision, first match wins;
- ``intake``: the receiver's side: decide, perform (log, count, submit one intent per payment);
- ``approval`` and ``outcomes``: how a rule-made refund behaves at Confirm and on a Create
  answered "no pending refund".
"""
