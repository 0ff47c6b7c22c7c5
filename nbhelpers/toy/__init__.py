"""The shapes world: the synthetic data behind the embedded tiny Stable Diffusion.

:mod:`nbhelpers.toy.world` draws captioned 64x64 images of coloured shapes in named drawing
styles (plus one style that is never named, and one generic word with a built-in bias);
:mod:`nbhelpers.toy.evaluator` reads shape, colour, style and background back from an image,
which turns every claim of the notebook series into a measured number. Import the submodules
directly; this package imports nothing heavy on its own. See ``docs/toy_world.md``.
"""
