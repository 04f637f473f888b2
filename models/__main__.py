"""``python -m models import SOURCE [--name NAME]``: one self-contained store entry per model.

SOURCE is a Hugging Face repo id (``stabilityai/stable-audio-open-1.0``,
``stabilityai/stable-audio-3-small-sfx``; gated repos need ``HF_TOKEN``), a local directory
with the same layout (Stable Audio 3: the hub's stable-audio-tools layout, converted, or
diffusers' layout, copied), ``demo`` or ``demo-sa3`` (Stable Audio Open and Stable Audio 3
demos, built offline).

``python -m models import-lora SOURCE --base MODEL [--name NAME]``: a LoRA file as Stability's
reference trains it (``.safetensors`` with ``lora_config`` metadata, or ``.ckpt``; local, or
``owner/repo[/file]`` on the hub), checked against the base model's layers and stored as its
own entry tied to that base.
"""

from __future__ import annotations

import argparse
import sys

from models import RECIPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a model into the BentoML model store")
    imp.add_argument("source", help="hub repo id, local directory, 'demo' or 'demo-sa3'")
    imp.add_argument("--name", help="store name (default: from the source)")
    lora = sub.add_parser("import-lora", help="import a LoRA file for a base model")
    lora.add_argument(
        "source", help="LoRA file (.safetensors or .ckpt), owner/repo or owner/repo/file"
    )
    lora.add_argument("--base", required=True, help="the base model's store name or alias")
    lora.add_argument("--name", help="store name (default: the file name without extension)")
    sub.add_parser("list", help="list the Stable Audio models and LoRAs in the store")
    args = parser.parse_args(argv)

    from stable_audio_bento.errors import StableAudioError

    try:
        if args.command == "import-lora":
            from stable_audio_bento.lora.store import import_lora

            print(import_lora(args.source, args.base, args.name))
        elif args.command == "import":
            from stable_audio_bento.engine.families import demo_names

            recipe_dir = None
            if args.source in demo_names():
                # A demo never touches the hub: set up the offline cache before any import.
                from stable_audio_bento.store.hub_cache import prepare_offline_hub

                prepare_offline_hub()
                recipe_dir = RECIPES / args.source
            from stable_audio_bento.engine.importer import import_source

            print(import_source(args.source, args.name, recipe_dir=recipe_dir))
        else:
            from stable_audio_bento.store.catalog import list_entries

            for entry in list_entries():
                aliases = ", ".join(entry.aliases)
                print(f"{entry.tag}\t{entry.metadata.get('max_seconds')} s\t{aliases}")
            from stable_audio_bento.lora.store import list_loras

            for item in list_loras():
                meta = item.metadata
                print(
                    f"{item.tag}\tLoRA {meta.get('adapter_type')} rank {meta.get('rank')}"
                    f"\tfor {item.base}"
                )
    except StableAudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
