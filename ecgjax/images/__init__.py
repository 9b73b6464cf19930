"""ECG images: 12-lead printouts drawn in the paper convention (`printout`), and the
`python -m ecgjax.images render` command that writes them for any data spec."""
