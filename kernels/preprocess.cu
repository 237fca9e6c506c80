// preprocess: crop, resize and normalise a batch of faces (or a whole frame) straight
// into an engine's NCHW float32 input, in one launch.
//
//   out[i, c, y, x] = (frame(M_i * (x, y, 1))[channel(c)] * scale + offset) * (1 - mask[y, x])
//
// Bilinear sampling, edge pixels repeated (cv2.warpAffine's INTER_LINEAR with
// BORDER_REPLICATE); channel(c) = 2 - c when swap_rb (BGR frame -> RGB input), else c.
// Layouts: frame height x width x 3 uint8 BGR, matrices N x 2 x 3 float32 (output pixel ->
// frame pixel), mask out_h x out_w float32 or null, out N x 3 x out_h x out_w float32.
// One thread per output pixel; grid.z walks the batch.

extern "C" __global__ void preprocess_faces(
    const unsigned char* frame, int height, int width,
    const float* matrices, const float* mask,
    float* out, int count, int out_h, int out_w,
    float scale, float offset, int swap_rb)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int i = blockIdx.z;
    if (x >= out_w || y >= out_h || i >= count) return;

    const float* m = matrices + (size_t)i * 6;
    // Clamping the sample point is exactly edge replication for bilinear sampling.
    float sx = fminf(fmaxf(m[0] * (float)x + m[1] * (float)y + m[2], 0.f), (float)(width - 1));
    float sy = fminf(fmaxf(m[3] * (float)x + m[4] * (float)y + m[5], 0.f), (float)(height - 1));
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    int x1 = min(x0 + 1, width - 1), y1 = min(y0 + 1, height - 1);
    float ax = sx - (float)x0, ay = sy - (float)y0;

    const unsigned char* p00 = frame + ((size_t)y0 * width + x0) * 3;
    const unsigned char* p01 = frame + ((size_t)y0 * width + x1) * 3;
    const unsigned char* p10 = frame + ((size_t)y1 * width + x0) * 3;
    const unsigned char* p11 = frame + ((size_t)y1 * width + x1) * 3;
    float keep = mask ? 1.f - __ldg(mask + (size_t)y * out_w + x) : 1.f;
    size_t plane = (size_t)out_h * out_w;
    float* o = out + (size_t)i * 3 * plane + (size_t)y * out_w + x;
    for (int c = 0; c < 3; ++c) {
        int s = swap_rb ? 2 - c : c;
        float top = (float)p00[s] + ((float)p01[s] - (float)p00[s]) * ax;
        float bottom = (float)p10[s] + ((float)p11[s] - (float)p10[s]) * ax;
        o[c * plane] = ((top + (bottom - top) * ay) * scale + offset) * keep;
    }
}
