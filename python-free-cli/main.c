#include "tessera/tessera.h"
int main(void) {
    return 0;
}
