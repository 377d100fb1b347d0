/* kmerl_frame.c - reference encoder of the K-MERL patch frame protocol v1. See kmerl_frame.h. */
#include "kmerl_frame.h"

uint16_t kmerl_crc16(uint16_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    uint8_t bit;
    for (i = 0u; i < len; ++i) {
        crc = (uint16_t)(crc ^ (uint16_t)((uint16_t)data[i] << 8));
        for (bit = 0u; bit < 8u; ++bit) {
            if ((crc & 0x8000u) != 0u) {
                crc = (uint16_t)((uint16_t)(crc << 1) ^ 0x1021u);
            } else {
                crc = (uint16_t)(crc << 1);
            }
        }
    }
    return crc;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static uint8_t popcount12(uint16_t mask)
{
    uint8_t n = 0u;
    uint8_t i;
    for (i = 0u; i < 12u; ++i) {
        n = (uint8_t)(n + ((mask >> i) & 1u));
    }
    return n;
}

static uint8_t bytes_per_sample(uint8_t format)
{
    return (format == KMERL_FMT_INT16) ? 2u : 3u;
}

int kmerl_encoder_init(kmerl_encoder_t *enc, const kmerl_device_t *dev, uint16_t first_seq)
{
    if (enc == 0 || dev == 0) {
        return -1;
    }
    if (dev->lead_mask == 0u || dev->lead_mask > 0x0FFFu || dev->fs_mhz < KMERL_FS_MIN_MHZ ||
        dev->fs_mhz > KMERL_FS_MAX_MHZ || dev->lsb_pv < KMERL_LSB_PV_MIN || dev->lsb_pv > KMERL_LSB_PV_MAX ||
        (dev->format != KMERL_FMT_INT16 && dev->format != KMERL_FMT_INT24)) {
        return -1;
    }
    enc->dev = dev;
    enc->seq = first_seq;
    enc->started = 0u;
    enc->n_leads = popcount12(dev->lead_mask);
    return 0;
}

/* Writes the 14-byte header; the payload must follow at out + KMERL_HEADER_SIZE. */
static void put_header(kmerl_encoder_t *enc, uint8_t *out, uint8_t type, uint16_t payload_len,
                       uint32_t timestamp)
{
    out[0] = KMERL_SYNC0;
    out[1] = KMERL_SYNC1;
    out[2] = KMERL_VERSION;
    out[3] = type;
    put_u16(&out[4], (uint16_t)(8u + payload_len));
    out[6] = (enc->started != 0u) ? 0u : KMERL_FLAG_STREAM_START;
    out[7] = 0u;
    put_u16(&out[8], enc->seq);
    put_u32(&out[10], timestamp);
}

/* Appends the CRC (big-endian) and advances the sequence; returns the frame length. */
static size_t finish(kmerl_encoder_t *enc, uint8_t *out, uint16_t payload_len)
{
    size_t end = (size_t)KMERL_HEADER_SIZE + payload_len;
    uint16_t crc = kmerl_crc16(0xFFFFu, &out[2], end - 2u);
    out[end] = (uint8_t)(crc >> 8);
    out[end + 1u] = (uint8_t)(crc & 0xFFu);
    enc->seq = (uint16_t)(enc->seq + 1u);
    enc->started = 1u;
    return end + KMERL_CRC_SIZE;
}

size_t kmerl_encode_samples(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp,
                            const int32_t *samples, uint8_t n_samples)
{
    const kmerl_device_t *dev;
    uint8_t bps;
    uint16_t data_len;
    uint16_t payload_len;
    uint16_t count;
    uint16_t i;
    uint8_t *p;
    int32_t lo;
    int32_t hi;
    int32_t v;

    if (enc == 0 || enc->dev == 0 || out == 0 || samples == 0 || n_samples == 0u) {
        return 0u;
    }
    dev = enc->dev;
    bps = bytes_per_sample(dev->format);
    count = (uint16_t)((uint16_t)n_samples * enc->n_leads);
    if ((uint32_t)count * bps > KMERL_MAX_SAMPLE_BYTES) {
        return 0u;
    }
    data_len = (uint16_t)(count * bps);
    payload_len = (uint16_t)(KMERL_SAMPLES_META_SIZE + data_len);
    if (out_cap < (size_t)KMERL_HEADER_SIZE + payload_len + KMERL_CRC_SIZE) {
        return 0u;
    }
    put_header(enc, out, KMERL_TYPE_SAMPLES, payload_len, timestamp);
    p = &out[KMERL_HEADER_SIZE];
    put_u16(&p[0], dev->lead_mask);
    p[2] = dev->format;
    p[3] = n_samples;
    put_u32(&p[4], dev->fs_mhz);
    put_u32(&p[8], dev->lsb_pv);
    p = &p[KMERL_SAMPLES_META_SIZE];
    if (bps == 2u) {
        lo = -32768;
        hi = 32767;
    } else {
        lo = -8388608;
        hi = 8388607;
    }
    for (i = 0u; i < count; ++i) {
        v = samples[i];
        if (v < lo) {
            v = lo;
        } else if (v > hi) {
            v = hi;
        }
        /* two's complement little-endian, via uint32_t so no signed shifts are needed */
        p[0] = (uint8_t)((uint32_t)v & 0xFFu);
        p[1] = (uint8_t)(((uint32_t)v >> 8) & 0xFFu);
        if (bps == 3u) {
            p[2] = (uint8_t)(((uint32_t)v >> 16) & 0xFFu);
        }
        p = &p[bps];
    }
    return finish(enc, out, payload_len);
}

size_t kmerl_encode_device_info(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp)
{
    const kmerl_device_t *dev;
    uint8_t *p;
    uint8_t i;
    uint8_t ended = 0u;

    if (enc == 0 || enc->dev == 0 || out == 0 ||
        out_cap < (size_t)KMERL_HEADER_SIZE + KMERL_DEVICE_INFO_SIZE + KMERL_CRC_SIZE) {
        return 0u;
    }
    dev = enc->dev;
    put_header(enc, out, KMERL_TYPE_DEVICE_INFO, KMERL_DEVICE_INFO_SIZE, timestamp);
    p = &out[KMERL_HEADER_SIZE];
    put_u16(&p[0], dev->lead_mask);
    p[2] = dev->format;
    p[3] = dev->samples_per_frame;
    put_u32(&p[4], dev->fs_mhz);
    put_u32(&p[8], dev->lsb_pv);
    put_u32(&p[12], dev->device_id);
    p[16] = dev->fw_major;
    p[17] = dev->fw_minor;
    p[18] = dev->fw_patch;
    p[19] = 0u;
    for (i = 0u; i < KMERL_MODEL_LEN; ++i) {
        if (dev->model[i] == '\0') {
            ended = 1u;
        }
        p[20u + i] = (ended != 0u) ? 0u : (uint8_t)dev->model[i];
    }
    return finish(enc, out, KMERL_DEVICE_INFO_SIZE);
}

size_t kmerl_encode_status(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp,
                           uint16_t lead_off_mask, uint8_t battery_pct, uint8_t status_flags)
{
    uint8_t *p;

    if (enc == 0 || enc->dev == 0 || out == 0 ||
        out_cap < (size_t)KMERL_HEADER_SIZE + KMERL_STATUS_SIZE + KMERL_CRC_SIZE ||
        (battery_pct > 100u && battery_pct != KMERL_BATTERY_UNKNOWN)) {
        return 0u;
    }
    put_header(enc, out, KMERL_TYPE_STATUS, KMERL_STATUS_SIZE, timestamp);
    p = &out[KMERL_HEADER_SIZE];
    put_u16(&p[0], (uint16_t)(lead_off_mask & 0x0FFFu));
    p[2] = battery_pct;
    p[3] = status_flags;
    return finish(enc, out, KMERL_STATUS_SIZE);
}
