"""The control-room side of corona-monitor (`corona-control`): reads what the nodes publish.

Everything here treats MQTT payloads and topics as untrusted input: any client allowed to publish
under the prefix can send them. The daemon (`daemon/`) never imports this package.
"""
