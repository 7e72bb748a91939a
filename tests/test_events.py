import pytest

from logkey.events import canonical_ip, normalise_protocol


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("::FFFF:192.0.2.1", "192.0.2.1"),
    ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("::1", "::1"),
])
def test_canonical_ip_accepts_literals(text, expected):
    assert canonical_ip(text) == expected


@pytest.mark.parametrize("text", [
    "", "mail.example.net", "fe80::1%eth0", "192.0.2", "192.0.2.256", "010.0.0.1",
    "1.2.3.4.5", "١٢٣.1.1.1", "192.0.2.1 ", " 192.0.2.1", "192.0.2.1\x00", "::ffff:1.2.3.4%1",
    "x" * 100,
])
def test_canonical_ip_refuses_everything_else(text):
    assert canonical_ip(text) is None


@pytest.mark.parametrize("raw, expected", [
    ("pop3", "pop3"), ("POP3", "pop3"), ("pop3s", "pop3"), ("imaps", "imap"), ("IMAP4", "imap"),
    ("cyrus/pop3", "pop3"), ("sloti30t15/imap", "imap"), ("perdition.imaps", "imap"),
    ("imapd-ssl", "imap"), ("ipop3d", "pop3"), ("managesieve", None), ("submission", None),
    ("smtp", None), ("lmtp", None), ("sieve", None), (None, None),
])
def test_protocols(raw, expected):
    assert normalise_protocol(raw) == expected
