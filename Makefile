# UniQA-HF: `make demo` runs the whole UniQA method end to end on generated data, offline, in
# minutes on a CPU; `make test` runs the test suite. Every stage is the real script a user runs.
#
#   make demo                 # everything lands under demo-output/ (removed and rebuilt each run)
#   make demo OUT=/tmp/demo   # elsewhere
#   make test

PYTHON ?= python
OUT ?= demo-output
SEED ?= 0
# One process; on a machine with a GPU accelerate uses it.
LAUNCH = $(PYTHON) -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DATA = $(OUT)/data
KADID = $(DATA)/kadid
AVA = $(DATA)/ava
# The demo's small CLIP (64x64 images) learns from scratch, hence a larger lr than the paper's 5e-6.
PRETRAIN = --init $(OUT)/clip-init --per_device_train_batch_size 32 --learning_rate 5e-4 --weight_decay 0.2 --image_transform random_resized_crop \
	--lr_scheduler cosine --warmup_steps 10 --checkpointing_steps 1000 --report_to none --dataloader_num_workers 2 --seed $(SEED)
stage = @printf '\n== demo %s  %s  (%s)\n' "$(1)" "$(2)" "$$(date +%T)"

.PHONY: demo test clean-demo

demo:
	@rm -rf $(OUT)
	$(call stage,[1/9],demo data: distorted CC0/public-domain photos in KADID-10k layout + an AVA-format set + a small random CLIP)
	$(PYTHON) train_scripts/make_demo_data.py --output_dir $(DATA) --clip_output $(OUT)/clip-init --seed $(SEED)
	$(call stage,[2/9],MOS-guided quality captions for the training references (template captioner))
	$(LAUNCH) train_scripts/generate_captions.py --dataset kadid10k --data_dir $(KADID) --split train --task quality \
		--captioner template --output $(OUT)/captions/quality.jsonl --seed $(SEED)
	$(call stage,[3/9],MOS-guided aesthetic captions for the AVA training images)
	$(LAUNCH) train_scripts/generate_captions.py --dataset ava --data_dir $(AVA) --split train --task aesthetics \
		--captioner template --output $(OUT)/captions/aesthetics.jsonl --seed $(SEED)
	$(call stage,[4/9],CLIP_aes: pre-train on the aesthetic captions only)
	$(LAUNCH) train_scripts/train_pretrain.py $(PRETRAIN) --corpus caption_jsonl=$(OUT)/captions/aesthetics.jsonl \
		--num_train_epochs 15 --output_dir $(OUT)/clip-aes
	$(call stage,[5/9],AIR purification of the AVA-format human comments with CLIP_aes)
	$(LAUNCH) train_scripts/purify_captions.py --data_dir $(AVA) --clip_aes $(OUT)/clip-aes \
		--output $(OUT)/captions/ava-purified.jsonl --top_k 3 --min_captions 2
	$(call stage,[6/9],unified pre-training on quality + aesthetic + purified captions (AVA test images excluded))
	$(LAUNCH) train_scripts/train_pretrain.py $(PRETRAIN) --corpus caption_jsonl=$(OUT)/captions/quality.jsonl \
		--corpus caption_jsonl=$(OUT)/captions/aesthetics.jsonl --corpus caption_jsonl=$(OUT)/captions/ava-purified.jsonl \
		--exclude ava=$(AVA) --num_train_epochs 20 --output_dir $(OUT)/uniqa-pretrained
	$(call stage,[7/9],zero-shot evaluation on the held-out references)
	$(PYTHON) train_scripts/evaluate.py --model $(OUT)/uniqa-pretrained --dataset kadid10k --data_dir $(KADID) \
		--protocol zero_shot --output_dir $(OUT)/eval-zero-shot --device cpu
	$(call stage,[8/9],adapter fine-tuning on the training references (feature bank), then evaluation)
	$(LAUNCH) train_scripts/train_adapter.py --model $(OUT)/uniqa-pretrained --dataset kadid10k --data_dir $(KADID) \
		--num_train_epochs 60 --learning_rate 3e-3 --output_dir $(OUT)/model --seed $(SEED)
	$(PYTHON) train_scripts/evaluate.py --model $(OUT)/model --dataset kadid10k --data_dir $(KADID) \
		--protocol single --output_dir $(OUT)/eval --device cpu
	$(call stage,[9/9],score the held-out images with pipeline("image-quality"))
	$(PYTHON) train_scripts/demo_report.py --model $(OUT)/model --data_dir $(KADID) --output $(OUT)/report.json

test:
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

clean-demo:
	rm -rf $(OUT)
