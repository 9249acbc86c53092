"""
The diffusion library, after openai/guided-diffusion: the ADM UNet (with attribute conditioning),
``GaussianDiffusion`` with its samplers and inversions, timestep respacing, the training loop and
its MPI utilities; plus the helpers the whole project shares — ``atomic`` (atomic file writes),
``mpi_launch`` (is this process started by mpiexec, and which rank), ``image_files`` (image
discovery) and ``attribute_table`` (reading a dataset's attributes.pt). It knows nothing of what
the attributes mean.
"""
