// warp: backward warp of a batch of crops by an affine map plus an optional dense flow.
//
//   out[i](x, y) = src[i](A_i * (x + flow_x, y + flow_y, 1))
//
// Bilinear sampling, edge pixels repeated (OpenCV's INTER_LINEAR with BORDER_REPLICATE),
// integer coordinates at pixel centres as in cv2.warpAffine and cv2.remap.
// Layouts: src N x src_h x src_w x C, matrices N x 2 x 3 (output pixel -> source pixel),
// flow N x out_h x out_w x 2 or null, out N x out_h x out_w x C; all float32.
// One thread per output pixel; grid.z walks the batch.

extern "C" __global__ void warp_affine_flow(
    const float* src, int src_h, int src_w, int channels,
    const float* matrices, const float* flow,
    float* out, int count, int out_h, int out_w)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int i = blockIdx.z;
    if (x >= out_w || y >= out_h || i >= count) return;

    size_t pixel = ((size_t)i * out_h + y) * out_w + x;
    float px = (float)x, py = (float)y;
    if (flow) {
        px += flow[pixel * 2];
        py += flow[pixel * 2 + 1];
    }
    const float* m = matrices + (size_t)i * 6;
    // Clamping the sample point is exactly edge replication for bilinear sampling.
    float sx = fminf(fmaxf(m[0] * px + m[1] * py + m[2], 0.f), (float)(src_w - 1));
    float sy = fminf(fmaxf(m[3] * px + m[4] * py + m[5], 0.f), (float)(src_h - 1));
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);
    float ax = sx - (float)x0, ay = sy - (float)y0;

    const float* image = src + (size_t)i * src_h * src_w * channels;
    const float* p00 = image + ((size_t)y0 * src_w + x0) * channels;
    const float* p01 = image + ((size_t)y0 * src_w + x1) * channels;
    const float* p10 = image + ((size_t)y1 * src_w + x0) * channels;
    const float* p11 = image + ((size_t)y1 * src_w + x1) * channels;
    float* o = out + pixel * channels;
    for (int c = 0; c < channels; ++c) {
        float top = p00[c] + (p01[c] - p00[c]) * ax;
        float bottom = p10[c] + (p11[c] - p10[c]) * ax;
        o[c] = top + (bottom - top) * ay;
    }
}
