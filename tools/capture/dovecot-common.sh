# Shared by dovecot.sh (2.3, the host's dovecot) and dovecot24.sh (2.4, a Debian 13 root):
# sourced, run by hand, not by CI. The service blocks read the same in both versions' syntax.
#
#   dovecot_listeners POP_PORT IMAP_PORT   prints the pop3-login/imap-login service blocks:
#                                          plain listeners on the ports, no pop3s/imaps
dovecot_listeners() {
  cat <<EOF2
service pop3-login {
  inet_listener pop3 {
    port = $1
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = $2
  }
  inet_listener imaps {
    port = 0
  }
}
EOF2
}
