/*
 * kmerl_frame.h - reference encoder of the K-MERL patch frame protocol, version 1.
 *
 * C99, no malloc, no floating point, no libc calls: fits a Cortex-M0. The caller owns every buffer;
 * a frame is at most KMERL_MAX_FRAME_SIZE bytes. See docs/protocol.md for the wire format.
 *
 * Usage:
 *   static const kmerl_device_t dev = { 0x0083u, KMERL_FMT_INT16, 10u, 500000u, 1000000u,
 *                                       0xC0FFEEu, 1u, 0u, 0u, "my-patch" };
 *   static kmerl_encoder_t enc;  static uint8_t frame[KMERL_MAX_FRAME_SIZE];
 *   kmerl_encoder_init(&enc, &dev, 0u);
 *   len = kmerl_encode_device_info(&enc, frame, sizeof frame, tick);   uart_write(frame, len);
 *   len = kmerl_encode_samples(&enc, frame, sizeof frame, tick, samples, 10u);  // samples: 10 x n_leads
 *
 * Licence: Apache-2.0 (as the rest of K-MERL Edge).
 */
#ifndef KMERL_FRAME_H
#define KMERL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define KMERL_SYNC0 0xA5u
#define KMERL_SYNC1 0x5Au
#define KMERL_VERSION 1u

#define KMERL_TYPE_SAMPLES 1u
#define KMERL_TYPE_DEVICE_INFO 2u
#define KMERL_TYPE_STATUS 3u

#define KMERL_FLAG_STREAM_START 0x01u

#define KMERL_FMT_INT16 1u
#define KMERL_FMT_INT24 2u

#define KMERL_STATUS_SATURATED 0x01u
#define KMERL_STATUS_LOW_BATTERY 0x02u
#define KMERL_STATUS_CHARGING 0x04u
#define KMERL_BATTERY_UNKNOWN 255u

#define KMERL_HEADER_SIZE 14u
#define KMERL_CRC_SIZE 2u
#define KMERL_SAMPLES_META_SIZE 12u
#define KMERL_MAX_SAMPLE_BYTES 1024u
#define KMERL_MAX_SAMPLES_PER_FRAME 255u
/* What an ECG device can mean: hosts refuse frames outside these (sampling rate in mHz, gain in pV/LSB). */
#define KMERL_FS_MIN_MHZ 10000u
#define KMERL_FS_MAX_MHZ 32000000u
#define KMERL_LSB_PV_MIN 1000u
#define KMERL_LSB_PV_MAX 1000000000u
#define KMERL_DEVICE_INFO_SIZE 36u
#define KMERL_STATUS_SIZE 4u
#define KMERL_MODEL_LEN 16u
#define KMERL_MAX_FRAME_SIZE (KMERL_HEADER_SIZE + KMERL_SAMPLES_META_SIZE + KMERL_MAX_SAMPLE_BYTES + KMERL_CRC_SIZE)

/* What the device streams. lead_mask bit i = lead i of I, II, III, aVR, aVL, aVF, V1..V6; samples are
 * interleaved in ascending bit order. fs_mhz: sampling rate in millihertz (500 Hz = 500000).
 * lsb_pv: picovolts per LSB (1 uV/LSB = 1000000), so mV = raw * lsb_pv * 1e-9 on the host. */
typedef struct {
    uint16_t lead_mask;
    uint8_t format;            /* KMERL_FMT_INT16 or KMERL_FMT_INT24 */
    uint8_t samples_per_frame; /* announced in the device-info frame */
    uint32_t fs_mhz;
    uint32_t lsb_pv;
    uint32_t device_id;
    uint8_t fw_major;
    uint8_t fw_minor;
    uint8_t fw_patch;
    char model[KMERL_MODEL_LEN]; /* ASCII, NUL-padded; need not be NUL-terminated when 16 long */
} kmerl_device_t;

typedef struct {
    const kmerl_device_t *dev;
    uint16_t seq;     /* sequence number of the next frame */
    uint8_t started;  /* 0 until the first frame (which carries KMERL_FLAG_STREAM_START) */
    uint8_t n_leads;
} kmerl_encoder_t;

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected, xorout 0. "123456789" -> 0x29B1.
 * Pass 0xFFFF as crc to start; chain calls to continue. */
uint16_t kmerl_crc16(uint16_t crc, const uint8_t *data, size_t len);

/* Returns 0 on success, -1 if the device description is invalid (empty mask, bad format, fs 0...). */
int kmerl_encoder_init(kmerl_encoder_t *enc, const kmerl_device_t *dev, uint16_t first_seq);

/* samples: n_samples x n_leads int32 values, sample-major (s0l0 s0l1 .. s1l0 ..), clamped to the format's
 * range. timestamp: the device's sample counter (ticks at fs) of the first sample.
 * Each encoder returns the frame length written to out, or 0 (nothing written, seq unchanged) if the
 * arguments are invalid or out_cap is too small. */
size_t kmerl_encode_samples(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp,
                            const int32_t *samples, uint8_t n_samples);
size_t kmerl_encode_device_info(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp);
size_t kmerl_encode_status(kmerl_encoder_t *enc, uint8_t *out, size_t out_cap, uint32_t timestamp,
                           uint16_t lead_off_mask, uint8_t battery_pct, uint8_t status_flags);

#endif /* KMERL_FRAME_H */
