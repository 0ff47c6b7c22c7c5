"""The shapes world and the tiny Stable Diffusion embedded in the package, one module per idea.

The world (``docs/toy_world.md``):

* :mod:`nbhelpers.toy.world`: captioned 64x64 images of coloured shapes in named drawing styles
  (plus one style that is never named, and one generic word with a built-in bias): scenes,
  captions, rendering, folders of pictures;
* :mod:`nbhelpers.toy.drawing`: how a scene is drawn (shape outlines, the styles' textures);
* :mod:`nbhelpers.toy.dataset`: the world as a torch ``Dataset``;
* :mod:`nbhelpers.toy.evaluator`: reads shape, colour, style and background back from an image,
  which turns every claim of the notebook series into a measured number;
* :mod:`nbhelpers.toy.degradations`: what a VAE round trip does to an image, for the evaluator;
* :mod:`nbhelpers.toy.evaluator_train`: how the evaluator's shipped weights were trained;
* :mod:`nbhelpers.toy.measure`: measured claims: what the evaluator reads in generated images,
  counted, with 95% intervals;
* :mod:`nbhelpers.toy.replicates`: a share over several training runs, and two recipes compared
  in words, with intervals that cover run-to-run variation as well as image sampling.

The model (``docs/toy_model.md``):

* :mod:`nbhelpers.toy.tokenizer`: the CLIP-style tokenizer of the world's vocabulary;
* :mod:`nbhelpers.toy.model`: the architecture, building, saving and loading the pipeline;
* :mod:`nbhelpers.toy.train`: the six-stage recipe that made the shipped weights;
* :mod:`nbhelpers.toy.autoencoder`: its autoencoder stages (VAE, latent scale, decoder);
* :mod:`nbhelpers.toy.optimise`: the training loop those stages share;
* :mod:`nbhelpers.toy.weak`: the weak model of autoguidance (a smaller, shorter-trained UNet).

Import the submodules directly; this package imports nothing heavy on its own.
"""
