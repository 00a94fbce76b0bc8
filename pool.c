/* pool.c - (being written) */
#define _GNU_SOURCE
#include "llll.h"
