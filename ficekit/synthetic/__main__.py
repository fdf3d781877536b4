"""`python -m ficekit.synthetic`: the renderer's CLI (same as `python -m ficekit.synthetic.render`)."""

from ficekit.synthetic.render import main

if __name__ == "__main__":
    raise SystemExit(main())
