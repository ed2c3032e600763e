"""WSSS methods as named recipes: ``method: irnet | seam | sec | dsrg``.

A recipe says which parts a method uses; the EM steps (classifier, CAM,
expansion, segmenter, confounder) and CONTA's [X, M_t] stay shared and ask the
recipe instead of branching on the method. Each method is a module of this
package whose ``RECIPE`` names its parts as ``"module:attribute"`` references
(:class:`Ref`), imported only when used: reading a recipe imports no torch, so
CPU steps and the Snakefile can consult it. Adding a method is adding one
module here (found by its name, :func:`get`) and the rules its expansion needs.

The hooks (what the step that uses a hook calls it with is in its docstring):

* ``build_round_classifier`` / ``train_round_classifier``: the round's classifier
  with its CONTA parts, built or trained (``conta_core.classify.build_classifier``'s
  and ``train_classifier``'s signatures): what ``train_classifier`` and the CAM
  step call.
* ``backbone``: builds the trunk; ``classifier``: the classifier class, whose
  ``cam(images, x_m, view)`` gives inference CAMs and whose CONTA splice is
  built from the shared fusion/context modules at ``conta_blocks``.
* ``training_loss``: ``loss(model, batch)`` for :func:`conta_core.train.train`;
  ``optimizer_groups``: ``groups(model)`` for its optimiser (None: the shared
  backbone 1x / new layers ``new_layer_lr_mult`` split of ``model.param_groups()``).
* ``cam_inference``: multi-scale flipped CAMs, normalised as the method does
  (``conta_core.cam.infer_cams``'s signature); ``cam_labels``: the CAM scored
  as a mask, ``cam_labels(cams, class_ids, **thresholds)`` with the thresholds
  named by ``cam_label_keys`` (argument -> ``cam`` config key; :meth:`Recipe.cam_labeller`).
* ``expansions``: the ``expand.method`` values the method supports, each an
  :class:`Expansion` (its per-round steps and their functions), and
  ``default_expansion``.
* ``defaults``: config values the method brings, by section, for keys the user
  leaves out (the paper's settings; presets set them explicitly); section
  ``root`` holds top-level keys (``rounds``).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Ref:
    """A function or class named by ``"package.module:attribute"``, imported on :meth:`load`."""
    target: str

    def __post_init__(self):
        module, sep, attr = self.target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"a recipe reference is 'module:attribute', got {self.target!r}")

    def load(self) -> Callable:
        module, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


@dataclass(frozen=True)
class Expansion:
    """One ``expand.method``: seeds -> pseudo-masks.

    ``steps``: the per-round steps (rule names) that run before ``expand``, in
    order (none for a CRF). ``labels``: CAMs -> the labels the expansion
    network trains on; ``network``: that network; ``loss``: its training loss;
    ``expand``: one image's CAMs (and network output) -> pseudo-mask.
    """
    name: str
    expand: Ref
    steps: tuple[str, ...] = ()
    labels: Ref | None = None
    network: Ref | None = None
    loss: Ref | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    backbone: Ref
    classifier: Ref
    training_loss: Ref
    cam_inference: Ref
    cam_labels: Ref
    expansions: Mapping[str, Expansion]
    default_expansion: str
    conta_blocks: tuple[int, ...] = (2, 3, 4, 5)
    optimizer_groups: Ref | None = None
    build_round_classifier: Ref | None = None
    train_round_classifier: Ref | None = None
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # cam_labels' threshold argument -> the ``cam`` config key that holds it
    cam_label_keys: Mapping[str, str] = field(default_factory=lambda: {"bg_threshold": "bg_threshold"})

    def __post_init__(self):
        if self.default_expansion not in self.expansions:
            raise ValueError(f"method {self.name}: default expansion {self.default_expansion!r} is not one of "
                             f"{sorted(self.expansions)}")
        for key, expansion in self.expansions.items():
            if key != expansion.name:
                raise ValueError(f"method {self.name}: expansion listed as {key!r} is named {expansion.name!r}")

    def expansion(self, name: str | None = None) -> Expansion:
        """The named ``expand.method`` (None: the method's default), or an error listing the choices."""
        name = name or self.default_expansion
        if name not in self.expansions:
            raise ValueError(f"expand.method {name!r} is not available for method {self.name!r}; "
                             f"choose one of {sorted(self.expansions)}")
        return self.expansions[name]

    def cam_labeller(self, cam: Mapping[str, Any]) -> Callable:
        """``label(cams, class_ids) -> mask``: the CAM scored as a mask, with the thresholds of the
        ``cam`` config section that this method's ``cam_labels`` reads (``cam_label_keys``)."""
        missing = [key for key in self.cam_label_keys.values() if cam.get(key) is None]
        if missing:
            raise ValueError(f"method {self.name} scores CAMs as masks with cam.{', cam.'.join(missing)}: set it")
        function = self.cam_labels.load()
        kwargs = {arg: cam[key] for arg, key in self.cam_label_keys.items()}

        def label(cams, class_ids, **levels):  # levels=: a quantised CAM's integers, where the function takes them
            return function(cams, class_ids, **kwargs, **levels)
        label.takes_levels = "levels" in inspect.signature(function).parameters
        return label

    def refs(self) -> dict[str, Ref]:
        """Every reference of the recipe by a dotted name (for checks and docs)."""
        out = {k: v for k, v in vars(self).items() if isinstance(v, Ref)}
        for name, expansion in self.expansions.items():
            out.update({f"expansions.{name}.{k}": v for k, v in vars(expansion).items() if isinstance(v, Ref)})
        return out


_CACHE: dict[str, Recipe] = {}


def available() -> list[str]:
    """The method names: the modules of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> Recipe:
    """The recipe of ``method: name``; an unknown name lists the known ones."""
    if name not in _CACHE:
        if name not in available():
            raise ValueError(f"method must be one of {available()}, got {name!r}")
        recipe = importlib.import_module(f"{__name__}.{name}").RECIPE
        if recipe.name != name:
            raise ValueError(f"conta_core/methods/{name}.py defines the recipe of {recipe.name!r}")
        _CACHE[name] = recipe
    return _CACHE[name]
