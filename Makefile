# UniQA-HF: `make demo` runs the whole UniQA method end to end on generated data, offline, in
# minutes on a CPU; `make test` runs the test suite. Every stage is the real script a user runs.
#
#   make demo                 # everything lands under demo-output/ (removed and rebuilt each run)
#   make demo OUT=/tmp/demo   # elsewhere
#   make test
#   make uniqa-tiny           # UniQA-Tiny, the shipped default model, from scratch (about 1 h 05 min on 2 idle CPU cores)
#   make uniqa-tiny SMOKE=1   # the same recipe at toy size (minutes), as CI runs it
#   make ship-uniqa-tiny      # copy the recipe's model into the package as its default model

PYTHON ?= python
OUT ?= demo-output
SEED ?= 0
# One process; on a machine with a GPU accelerate uses it. accelerate would give the process one
# CPU thread (OMP_NUM_THREADS=1): on a CPU-only machine it gets every core.
NPROC := $(shell nproc 2>/dev/null || echo 1)
LAUNCH = $(PYTHON) -m accelerate.commands.launch --quiet --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(NPROC)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DATA = $(OUT)/data
KADID = $(DATA)/kadid
AVA = $(DATA)/ava
# The demo starts from the shipped UniQA-Tiny backbone (its adapter is dropped), as the paper starts
# from CLIP; its 64x64 views see native-resolution crops, so pre-training does too.
DEMO_INIT ?= modeling_uniqa/assets/uniqa-tiny
PRETRAIN = --init $(DEMO_INIT) --per_device_train_batch_size 32 --learning_rate 5e-5 --weight_decay 0.05 --optimizer adamw \
	--image_transform native_crop --hflip 0.5 --lr_scheduler cosine --warmup_steps 10 --checkpointing_steps 1000 --report_to none \
	--dataloader_num_workers 1 --seed $(SEED)
stage = @printf '\n== %s  %s  (%s)\n' "$(1)" "$(2)" "$$(date +%T)"

.PHONY: demo test test-fast clean-demo uniqa-tiny ship-uniqa-tiny

demo:
	@rm -rf $(OUT)
	$(call stage,demo [1/9],demo data: distorted CC0/public-domain photos in KADID-10k layout + an AVA-format set)
	$(PYTHON) train_scripts/make_demo_data.py --output_dir $(DATA) --size 256 --seed $(SEED)
	$(call stage,demo [2/9],MOS-guided quality captions for the training references (template captioner))
	$(LAUNCH) train_scripts/generate_captions.py --dataset kadid10k --data_dir $(KADID) --split train --task quality \
		--captioner template --output $(OUT)/captions/quality.jsonl --seed $(SEED)
	$(call stage,demo [3/9],MOS-guided aesthetic captions for the AVA training images)
	$(LAUNCH) train_scripts/generate_captions.py --dataset ava --data_dir $(AVA) --split train --task aesthetics \
		--captioner template --output $(OUT)/captions/aesthetics.jsonl --seed $(SEED)
	$(call stage,demo [4/9],CLIP_aes: pre-train on the aesthetic captions only)
	$(LAUNCH) train_scripts/train_pretrain.py $(PRETRAIN) --corpus caption_jsonl=$(OUT)/captions/aesthetics.jsonl \
		--num_train_epochs 15 --output_dir $(OUT)/clip-aes
	$(call stage,demo [5/9],AIR purification of the AVA-format human comments with CLIP_aes)
	$(LAUNCH) train_scripts/purify_captions.py --data_dir $(AVA) --clip_aes $(OUT)/clip-aes \
		--output $(OUT)/captions/ava-purified.jsonl --top_k 3 --min_captions 2
	$(call stage,demo [6/9],unified pre-training on quality + aesthetic + purified captions (AVA test images excluded))
	$(LAUNCH) train_scripts/train_pretrain.py $(PRETRAIN) --corpus caption_jsonl=$(OUT)/captions/quality.jsonl \
		--corpus caption_jsonl=$(OUT)/captions/aesthetics.jsonl --corpus caption_jsonl=$(OUT)/captions/ava-purified.jsonl \
		--exclude ava=$(AVA) --num_train_epochs 90 --output_dir $(OUT)/uniqa-pretrained
	$(call stage,demo [7/9],zero-shot evaluation on the held-out references)
	$(PYTHON) train_scripts/evaluate.py --model $(OUT)/uniqa-pretrained --dataset kadid10k --data_dir $(KADID) \
		--protocol zero_shot --output_dir $(OUT)/eval-zero-shot --device cpu
	$(call stage,demo [8/9],adapter fine-tuning on the training references (feature bank), then evaluation)
	$(LAUNCH) train_scripts/train_adapter.py --model $(OUT)/uniqa-pretrained --dataset kadid10k --data_dir $(KADID) \
		--num_train_epochs 30 --learning_rate 1e-3 --view_policy random10 --output_dir $(OUT)/model --seed $(SEED)
	$(PYTHON) train_scripts/evaluate.py --model $(OUT)/model --dataset kadid10k --data_dir $(KADID) \
		--protocol single --output_dir $(OUT)/eval --device cpu
	$(call stage,demo [9/9],score the held-out images with pipeline("image-quality"); a contact sheet of the best and worst)
	$(PYTHON) train_scripts/demo_report.py --model $(OUT)/model --dataset kadid10k --data_dir $(KADID) --output $(OUT)/report.json
	$(PYTHON) -m modeling_uniqa.cli retrieve $(KADID)/images --model $(OUT)/model --top 8 --output $(OUT)/retrieval/sheet.png \
		--query "This is a perfect quality image." --query "This is a bad quality image."

# ---------------------------------------------------------------------------------------------
# UniQA-Tiny: real photos from Debian packages (fetched with `apt-get download`, no root) and
# scikit-image, distorted at native resolution; a small CLIP pre-trained from scratch on
# MOS-guided captions that name each distortion, its Multi-Cue adapter, the held-out report and
# the model card. Sizes and schedule are those measured for 2 CPU cores (README, "UniQA-Tiny").
TINY ?= uniqa-tiny-build
PHOTO_CACHE ?= $(HOME)/.cache/uniqa-photos
ifeq ($(SMOKE),1)
TINY_CORPUS = --max_photos 2 --codes 01 10 11 21 --short_side 96 128
TINY_CLIP = --vision_width 32 --vision_layers 1 --vision_heads 2 --text_width 16 --text_layers 1 --text_heads 1 --projection_dim 16 --image_size 32
TINY_STEPS = --max_steps 12 --warmup_steps 2 --checkpointing_steps 6 --per_device_train_batch_size 16 --crops_per_image 2 --eval_steps 6 --eval_max_samples 40
TINY_ADAPTER = --num_train_epochs 2
else
TINY_CORPUS =
TINY_CLIP = --vision_width 128 --vision_layers 4 --vision_heads 4 --text_width 32 --text_layers 3 --text_heads 1 --projection_dim 128 --image_size 64
TINY_STEPS = --max_steps 4000 --warmup_steps 200 --checkpointing_steps 500 --per_device_train_batch_size 128 --eval_steps 500 --eval_max_samples 300
TINY_ADAPTER = --num_train_epochs 30
endif

# Pre-training takes another arithmetic path on a CPU with AVX-512 than on one with AVX2 only, and
# ends elsewhere (README, "Reruns"): the recipe pins torch's and MKL's kernels to AVX2, which every
# x86-64 CPU of the last decade has, so both kinds of machine compute alike (ignored elsewhere).
uniqa-tiny: export ATEN_CPU_CAPABILITY = avx2
uniqa-tiny: export MKL_ENABLE_INSTRUCTIONS = AVX2
uniqa-tiny:
	@mkdir -p $(TINY) && date +%s > $(TINY)/started_at
	$(call stage,uniqa-tiny [1/7],photos from packages -> references of train and held-out sources -> distorted corpus in KADID layout)
	$(PYTHON) train_scripts/make_quality_corpus.py --output_dir $(TINY)/data --cache_dir $(PHOTO_CACHE) --seed $(SEED) $(TINY_CORPUS)
	$(call stage,uniqa-tiny [2/7],a small CLIP with random weights and OpenAI's tokenizer)
	$(PYTHON) train_scripts/make_small_clip.py --output_dir $(TINY)/clip-init --seed $(SEED) $(TINY_CLIP)
	$(call stage,uniqa-tiny [3/7],MOS-guided captions naming each image's distortion and its strength)
	$(LAUNCH) train_scripts/generate_captions.py --dataset kadid10k --data_dir $(TINY)/data/train --split full --task quality \
		--captioner template --output $(TINY)/captions/quality.jsonl --seed $(SEED) --resume
	$(call stage,uniqa-tiny [4/7],contrastive pre-training from scratch on native-resolution crops)
	$(LAUNCH) train_scripts/train_pretrain.py --init $(TINY)/clip-init --corpus caption_jsonl=$(TINY)/captions/quality.jsonl \
		--image_transform native_crop --hflip 0.5 --optimizer adamw --learning_rate 5e-4 --weight_decay 0.05 --lr_scheduler cosine \
		--checkpoints_total_limit 2 --report_to none --dataloader_num_workers 1 --seed $(SEED) --resume_from_checkpoint latest \
		--eval_dataset kadid10k=$(TINY)/data/heldout --eval_split test --eval_view_policy random4 $(TINY_STEPS) --output_dir $(TINY)/pretrained
	$(call stage,uniqa-tiny [5/7],Multi-Cue adapter on the training sources)
	$(LAUNCH) train_scripts/train_adapter.py --model $(TINY)/pretrained --dataset kadid10k --data_dir $(TINY)/data/train \
		--learning_rate 1e-3 --per_device_train_batch_size 64 --dataset_option include_references=true --reference_rank_weight 0.1 --bank_halved_crops 2 \
		--view_policy pyramid14 --seed $(SEED) $(TINY_ADAPTER) --resume_from_checkpoint latest --output_dir $(TINY)/uniqa-tiny
	$(call stage,uniqa-tiny [6/7],the held-out sources: the paper's evaluation script)
	$(PYTHON) train_scripts/evaluate.py --model $(TINY)/uniqa-tiny --dataset kadid10k --data_dir $(TINY)/data/heldout \
		--protocol cross --output_dir $(TINY)/eval --device cpu
	$(call stage,uniqa-tiny [7/7],per distortion beside BRISQUE on the held-out sources; the model card)
	$(PYTHON) train_scripts/evaluate_distortions.py --model $(TINY)/uniqa-tiny --data_dir $(TINY)/data/heldout --output_dir $(TINY)/eval-distortions \
		--card --card_license gpl-3.0 --card_sources $(TINY)/data/SOURCES.md --started_at $$(cat $(TINY)/started_at)

ship-uniqa-tiny:
	$(PYTHON) -m modeling_uniqa.core.default_model ship $(TINY)/uniqa-tiny
	$(PYTHON) -m model_cards modeling_uniqa/assets/uniqa-tiny  # its usage: the default model, no path

test:
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

# Everything but the tests that start other processes (marked `slow` in tests/conftest.py).
test-fast:
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow"

clean-demo:
	rm -rf $(OUT)
