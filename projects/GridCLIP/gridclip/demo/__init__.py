"""
The open-vocabulary detection demo behind ``tools/demo.py``, in the style of Detic's
``VisualizationDemo``: the tool parses its arguments and calls these modules.

- :mod:`.arguments`: checks made before the model is built, ``--vocabulary`` -> names;
- :mod:`.outputs`: input expansion and the output plan (never overwriting an input);
- :mod:`.visualization`: Visualizer drawing with ``Metadata(thing_classes=names)``, image and video
  writing, the display window;
- :mod:`.runs`: the image, video and webcam loops.
"""
