"""Developer tools for GPU machines: preparing one without network access
(``prepare_gpu_carry.sh``), the GPU check (``gpu_check.sh``) and mmcv's CUDA
focal op without mmcv's compiled ops (:mod:`.mmcv_cuda_focal`)."""
