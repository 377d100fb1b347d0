/*
 * kmerl_golden.c - host-side test driver: reads a frame script on stdin, writes the encoded frames
 * (binary) on stdout. Used by tests/test_bridge_c.py to check that the C encoder and the Python encoder
 * produce byte-identical frames, and to write the golden vectors in tests/fixtures/bridge_golden.
 *
 * Script lines (whitespace separated, integers in decimal):
 *   D lead_mask format samples_per_frame fs_mhz lsb_pv device_id fw_major fw_minor fw_patch model first_seq
 *        (re)configure the device and restart the encoder; model is one token, "-" for none
 *   I timestamp                         device-info frame
 *   S timestamp n v0 v1 ... v(n*n_leads-1)   samples frame
 *   T timestamp lead_off_mask battery_pct flags   status frame
 */
#include <stdio.h>
#include <string.h>

#include "kmerl_frame.h"

#define MAX_VALUES (KMERL_MAX_SAMPLE_BYTES / 2u)

int main(void)
{
    static kmerl_device_t dev;
    static kmerl_encoder_t enc;
    static uint8_t frame[KMERL_MAX_FRAME_SIZE];
    static int32_t values[MAX_VALUES];
    static char model[64];
    char cmd[4];
    unsigned long a, b, c, d, e, f, g, h, i, k;
    long v;
    size_t len, j, count;
    int configured = 0;

    while (scanf("%3s", cmd) == 1) {
        len = 0u;
        if (strcmp(cmd, "D") == 0) {
            if (scanf("%lu %lu %lu %lu %lu %lu %lu %lu %lu %63s %lu", &a, &b, &c, &d, &e, &f, &g, &h, &i,
                      model, &k) != 11) {
                return 2;
            }
            memset(&dev, 0, sizeof dev);
            dev.lead_mask = (uint16_t)a;
            dev.format = (uint8_t)b;
            dev.samples_per_frame = (uint8_t)c;
            dev.fs_mhz = (uint32_t)d;
            dev.lsb_pv = (uint32_t)e;
            dev.device_id = (uint32_t)f;
            dev.fw_major = (uint8_t)g;
            dev.fw_minor = (uint8_t)h;
            dev.fw_patch = (uint8_t)i;
            if (strcmp(model, "-") != 0) {
                for (j = 0u; j < KMERL_MODEL_LEN && model[j] != '\0'; ++j) {
                    dev.model[j] = model[j];
                }
            }
            if (kmerl_encoder_init(&enc, &dev, (uint16_t)k) != 0) {
                return 3;
            }
            configured = 1;
            continue;
        }
        if (!configured) {
            return 4;
        }
        if (strcmp(cmd, "I") == 0) {
            if (scanf("%lu", &a) != 1) {
                return 2;
            }
            len = kmerl_encode_device_info(&enc, frame, sizeof frame, (uint32_t)a);
        } else if (strcmp(cmd, "S") == 0) {
            if (scanf("%lu %lu", &a, &b) != 2) {
                return 2;
            }
            count = (size_t)b * enc.n_leads;
            if (count > MAX_VALUES) {
                return 5;
            }
            for (j = 0u; j < count; ++j) {
                if (scanf("%ld", &v) != 1) {
                    return 2;
                }
                values[j] = (int32_t)v;
            }
            len = kmerl_encode_samples(&enc, frame, sizeof frame, (uint32_t)a, values, (uint8_t)b);
        } else if (strcmp(cmd, "T") == 0) {
            if (scanf("%lu %lu %lu %lu", &a, &b, &c, &d) != 4) {
                return 2;
            }
            len = kmerl_encode_status(&enc, frame, sizeof frame, (uint32_t)a, (uint16_t)b, (uint8_t)c,
                                      (uint8_t)d);
        } else {
            return 2;
        }
        if (len == 0u) {
            return 6;
        }
        if (fwrite(frame, 1u, len, stdout) != len) {
            return 7;
        }
    }
    return 0;
}
