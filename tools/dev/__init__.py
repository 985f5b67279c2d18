"""Developer tools for GPU machines: prepare_gpu_carry.sh, gpu_check.sh, mmcv_cuda_focal."""
