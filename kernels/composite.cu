// composite: blend a batch of de-identified crops back into the frame, in one launch.
//
// For each face i in order, over its region of interest rois[i] = (left, top, right,
// bottom) of the frame (the box that holds the crop's corners, as stream.synth.paste
// computes it):
//
//   p = M_i * (x, y, 1)                     frame pixel -> crop pixel
//   a = alpha(p)                            bilinear, zero outside the crop
//   v = clamp(rint(v * (1 - a) + crop_i(p) * a), 0, 255)   crop bilinear, edges repeated
//
// Each face's result is rounded to uint8 before the next face is blended, so overlapping
// faces give what pasting them one after the other gives.
// Layouts: frame height x width x 3 uint8 BGR (modified in place), crops N x size x size x 3
// float32 BGR, matrices N x 2 x 3, alpha size x size float32, rois N x 4 int32.
// One thread per frame pixel of the box from (origin_x, origin_y) that covers every ROI;
// pixels outside every ROI are never written.

__device__ __forceinline__ float alpha_tap(const float* alpha, int size, int x, int y)
{
    return (x >= 0 && x < size && y >= 0 && y < size) ? __ldg(alpha + (size_t)y * size + x) : 0.f;
}

extern "C" __global__ void composite_faces(
    unsigned char* frame, int height, int width, int origin_x, int origin_y,
    const float* crops, const float* matrices, const int* rois, int count,
    const float* alpha, int size)
{
    int x = origin_x + (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int y = origin_y + (int)(blockIdx.y * blockDim.y + threadIdx.y);
    if (x >= width || y >= height) return;

    unsigned char* pixel = frame + ((size_t)y * width + x) * 3;
    int value[3] = {pixel[0], pixel[1], pixel[2]};
    bool touched = false;
    for (int i = 0; i < count; ++i) {
        const int* roi = rois + (size_t)i * 4;
        if (x < roi[0] || y < roi[1] || x >= roi[2] || y >= roi[3]) continue;
        const float* m = matrices + (size_t)i * 6;
        float sx = m[0] * (float)x + m[1] * (float)y + m[2];
        float sy = m[3] * (float)x + m[4] * (float)y + m[5];

        // The alpha outside the crop is zero (cv2.warpAffine's borderValue=0).
        float fx = floorf(sx), fy = floorf(sy);
        int ax0 = (int)fx, ay0 = (int)fy;
        float wx = sx - fx, wy = sy - fy;
        float top = alpha_tap(alpha, size, ax0, ay0) * (1.f - wx) + alpha_tap(alpha, size, ax0 + 1, ay0) * wx;
        float bottom = alpha_tap(alpha, size, ax0, ay0 + 1) * (1.f - wx) + alpha_tap(alpha, size, ax0 + 1, ay0 + 1) * wx;
        float a = top * (1.f - wy) + bottom * wy;
        if (a == 0.f) continue;  // rint(v * 1 + crop * 0) is v: nothing to blend

        // The crop repeats its edge pixels: clamping the sample point does exactly that.
        float cx = fminf(fmaxf(sx, 0.f), (float)(size - 1));
        float cy = fminf(fmaxf(sy, 0.f), (float)(size - 1));
        int x0 = (int)floorf(cx), y0 = (int)floorf(cy);
        int x1 = min(x0 + 1, size - 1), y1 = min(y0 + 1, size - 1);
        float bx = cx - (float)x0, by = cy - (float)y0;
        const float* crop = crops + (size_t)i * size * size * 3;
        const float* p00 = crop + ((size_t)y0 * size + x0) * 3;
        const float* p01 = crop + ((size_t)y0 * size + x1) * 3;
        const float* p10 = crop + ((size_t)y1 * size + x0) * 3;
        const float* p11 = crop + ((size_t)y1 * size + x1) * 3;
        for (int c = 0; c < 3; ++c) {
            float upper = __ldg(p00 + c) + (__ldg(p01 + c) - __ldg(p00 + c)) * bx;
            float lower = __ldg(p10 + c) + (__ldg(p11 + c) - __ldg(p10 + c)) * bx;
            float sample = upper + (lower - upper) * by;
            value[c] = min(max(__float2int_rn((float)value[c] * (1.f - a) + sample * a), 0), 255);
        }
        touched = true;
    }
    if (touched) {
        pixel[0] = (unsigned char)value[0];
        pixel[1] = (unsigned char)value[1];
        pixel[2] = (unsigned char)value[2];
    }
}
