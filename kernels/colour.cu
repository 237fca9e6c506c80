// colour: 4:2:0 YUV (NV12 or I420) <-> packed BGR for frames from and to hardware codecs.
//
// Limited range ("TV" levels: Y 16..235, U/V 16..240), BT.601 (matrix 601) or BT.709
// (matrix 709). Every plane has its own row pitch in bytes (hardware surfaces are
// pitched, pitch >= the bytes of a visible row); BGR is H x W x 3, rows unpadded.
// NV12: a Y plane and one interleaved U, V plane of H / 2 rows. I420: Y, U and V planes,
// U and V of H / 2 rows of W / 2 samples. Width and height are even.
// One thread per 2 x 2 pixel block, which shares one chroma sample: YUV -> BGR repeats it
// to the four pixels, BGR -> YUV writes the chroma of the block's average colour.

// Luma weights of red and blue for the matrix (green is the rest).
__device__ __forceinline__ void luma_weights(int matrix, float* kr, float* kb)
{
    *kr = matrix == 709 ? 0.2126f : 0.299f;
    *kb = matrix == 709 ? 0.0722f : 0.114f;
}

__device__ __forceinline__ unsigned char to_byte(float v)
{
    return (unsigned char)__float2int_rn(fminf(fmaxf(v, 0.f), 255.f));
}

__device__ __forceinline__ void yuv_to_bgr(float y, float u, float v, int matrix, unsigned char* bgr)
{
    float kr, kb;
    luma_weights(matrix, &kr, &kb);
    float kg = 1.f - kr - kb;
    float luma = (y - 16.f) * (255.f / 219.f);
    float pb = (u - 128.f) * (255.f / 224.f), pr = (v - 128.f) * (255.f / 224.f);
    bgr[0] = to_byte(luma + 2.f * (1.f - kb) * pb);
    bgr[1] = to_byte(luma - (2.f * kb * (1.f - kb) / kg) * pb - (2.f * kr * (1.f - kr) / kg) * pr);
    bgr[2] = to_byte(luma + 2.f * (1.f - kr) * pr);
}

__device__ __forceinline__ float luma_of(float b, float g, float r, float kr, float kb)
{
    return kr * r + (1.f - kr - kb) * g + kb * b;
}

// The four luma bytes of block (bx, by) into the Y plane, and the block's chroma into *u, *v.
__device__ __forceinline__ void bgr_block_to_yuv(
    const unsigned char* bgr, int width, int bx, int by, int matrix,
    unsigned char* y_plane, int y_pitch, unsigned char* u, unsigned char* v)
{
    float kr, kb;
    luma_weights(matrix, &kr, &kb);
    float mean[3] = {0.f, 0.f, 0.f};
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            int x = 2 * bx + dx, y = 2 * by + dy;
            const unsigned char* p = bgr + ((size_t)y * width + x) * 3;
            float luma = luma_of((float)p[0], (float)p[1], (float)p[2], kr, kb);
            y_plane[(size_t)y * y_pitch + x] = to_byte(16.f + (219.f / 255.f) * luma);
            for (int c = 0; c < 3; ++c) mean[c] += 0.25f * (float)p[c];
        }
    }
    float luma = luma_of(mean[0], mean[1], mean[2], kr, kb);
    *u = to_byte(128.f + (224.f / 255.f) * (mean[0] - luma) / (2.f * (1.f - kb)));
    *v = to_byte(128.f + (224.f / 255.f) * (mean[2] - luma) / (2.f * (1.f - kr)));
}

// The block's four pixels from its luma and one chroma pair.
__device__ __forceinline__ void yuv_block_to_bgr(
    const unsigned char* y_plane, int y_pitch, float u, float v, int bx, int by, int matrix, unsigned char* bgr, int width)
{
    for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
            int x = 2 * bx + dx, y = 2 * by + dy;
            yuv_to_bgr((float)y_plane[(size_t)y * y_pitch + x], u, v, matrix, bgr + ((size_t)y * width + x) * 3);
        }
    }
}

extern "C" __global__ void nv12_to_bgr(
    const unsigned char* y_plane, int y_pitch, const unsigned char* uv_plane, int uv_pitch,
    unsigned char* bgr, int width, int height, int matrix)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= width / 2 || by >= height / 2) return;
    const unsigned char* uv = uv_plane + (size_t)by * uv_pitch + 2 * bx;
    yuv_block_to_bgr(y_plane, y_pitch, (float)uv[0], (float)uv[1], bx, by, matrix, bgr, width);
}

extern "C" __global__ void i420_to_bgr(
    const unsigned char* y_plane, int y_pitch, const unsigned char* u_plane, int u_pitch,
    const unsigned char* v_plane, int v_pitch, unsigned char* bgr, int width, int height, int matrix)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= width / 2 || by >= height / 2) return;
    float u = (float)u_plane[(size_t)by * u_pitch + bx], v = (float)v_plane[(size_t)by * v_pitch + bx];
    yuv_block_to_bgr(y_plane, y_pitch, u, v, bx, by, matrix, bgr, width);
}

extern "C" __global__ void bgr_to_nv12(
    const unsigned char* bgr, int width, int height, unsigned char* y_plane, int y_pitch,
    unsigned char* uv_plane, int uv_pitch, int matrix)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= width / 2 || by >= height / 2) return;
    unsigned char* uv = uv_plane + (size_t)by * uv_pitch + 2 * bx;
    bgr_block_to_yuv(bgr, width, bx, by, matrix, y_plane, y_pitch, uv, uv + 1);
}

extern "C" __global__ void bgr_to_i420(
    const unsigned char* bgr, int width, int height, unsigned char* y_plane, int y_pitch,
    unsigned char* u_plane, int u_pitch, unsigned char* v_plane, int v_pitch, int matrix)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx >= width / 2 || by >= height / 2) return;
    bgr_block_to_yuv(bgr, width, bx, by, matrix, y_plane, y_pitch,
                     u_plane + (size_t)by * u_pitch + bx, v_plane + (size_t)by * v_pitch + bx);
}
