"""Privacy harness: the provider's transcript, leakage attacks that read only it (plus public
knowledge), and user-side defences. Importing this package imports nothing heavy (the ClientApp
uses ``defences``)."""
