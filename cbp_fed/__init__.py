"""cbp-fed: CBP-Tuning (Customized Black-box Prompt Tuning) for frozen LLMs, federated with Flower.

Import what you need from the submodules; this package file stays import-light so that the
ClientApp, which must not load torch, can import ``cbp_fed.client_app`` cheaply.
"""

__version__ = "0.1.0"
