"""nh-crossbasin start-up hook, run by ``nh_crossbasin.pth`` (Python < 3.15) or ``nh_crossbasin.start`` (PEP 829).

It must cost (almost) nothing: it imports only ``sys`` and ``os`` and puts a one-shot finder on ``sys.meta_path``.
When, and only when, the process imports ``neuralhydrology``, the finder lets NH's package load and then activates
the plugin (``nh_crossbasin.register()``). ``NH_CROSSBASIN_DISABLE=1`` switches activation off; configs that use
plugin keys then fail with a message that says how to switch it on.
"""
import os
import sys

DISABLE_ENV = "NH_CROSSBASIN_DISABLE"
_WATCHED = "neuralhydrology"


def _activate():
    reason = None
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        reason = f"{DISABLE_ENV}={os.environ[DISABLE_ENV]} is set"
    else:
        try:
            import nh_crossbasin
            nh_crossbasin.register()
        except Exception as err:  # never break NH itself because the plugin could not start
            reason = f"activation failed ({type(err).__name__}: {err})"
            sys.stderr.write(f"nh-crossbasin: plugin not activated: {reason}\n")
    if reason is not None:
        try:
            from nh_crossbasin import nh_adapter
            nh_adapter.install_disabled_hint(reason)
        except Exception as err:
            sys.stderr.write(f"nh-crossbasin: could not install the disabled-plugin hint: {err}\n")


class _ActivatingLoader:
    """Wraps NH's package loader: runs it, then activates the plugin."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _activate()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _NHImportWatcher:
    """One-shot meta-path finder that waits for ``import neuralhydrology``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _WATCHED:
            return None
        _remove_watcher()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ActivatingLoader(spec.loader)
                return spec
        return None


def _remove_watcher():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _NHImportWatcher)]


def install():
    """Entry point of the start-up files: arrange for activation when NH is imported (idempotent)."""
    if _WATCHED in sys.modules:
        _activate()
    elif not any(isinstance(f, _NHImportWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _NHImportWatcher())
