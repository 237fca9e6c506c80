"""Authorised recovery: the original pixels of every masked region sealed beside the
anonymised output for a controller's public key (``sidecar``), restored per person only with
the private key (``restore``), every look at them logged (``access``).

    veil keygen -o controller
    veil run in.mp4 -o out.mp4 --recovery-key controller.pub      # also out.mp4.veilrec
    veil recover out.mp4 --key controller.key --list -o faces.jpg
    veil recover out.mp4 --key controller.key --track 3 -o track3.mkv
"""
