/* What Python may call: the declarations of sslsock_core.h, for cffi's cdef.
 * Constants are filled by cffi from the header ("..."), never copied. */
#define SS_OK ...
#define SS_E_TIMEOUT ...
#define SS_E_PEER_CLOSED ...
#define SS_E_RESET ...
#define SS_E_TLS ...
#define SS_E_VERIFY ...
#define SS_E_SYSTEM ...
#define SS_E_FRAME ...
#define SS_E_TOO_BIG ...
#define SS_E_ADDRESS ...
#define SS_E_IN_USE ...
#define SS_E_CLOSED ...
#define SS_E_NOMEM ...
#define SS_E_INVALID ...
#define SS_E_CONFIG ...
#define SS_V_SSL3 ...
#define SS_V_TLS1 ...
#define SS_V_TLS1_1 ...
#define SS_V_TLS1_2 ...
#define SS_V_TLS1_3 ...
#define SS_MODE_END_TAG ...
#define SS_MODE_SIZE ...
#define SS_MODE_END_TAG_BUFFER ...
#define SS_MODE_NO_END_TAG ...
#define SS_STATE_OPEN ...
#define SS_STATE_BROKEN ...
#define SS_STATE_CLOSED ...
typedef struct ss_err {
    int code;          
    int sys_code;      
    char message[256]; 
    char detail[512];  
} ss_err;
unsigned ss_versions_supported(void);
const char *ss_openssl_version_linked(void);
const char *ss_openssl_version_compiled(void);
long ss_openssl_security_level_default(void);
typedef struct ss_ctx_config {
    int is_server;
    unsigned versions;          
    int security_level;         
    int legacy_security_level;  
    const char *cipher_list;    
    const char *ciphersuites;   
    const char *cert_pem;       
    size_t cert_pem_len;
    const char *key_pem;        
    size_t key_pem_len;
    int verify_peer;            
    int use_system_ca;          
    const char *ca_pem;         
    size_t ca_pem_len;
} ss_ctx_config;
typedef struct ss_ctx ss_ctx;
int ss_ctx_new(const ss_ctx_config *cfg, ss_ctx **out, ss_err *err);
void ss_ctx_free(ss_ctx *ctx); 
typedef struct ss_conn ss_conn;
typedef struct ss_conn_info {
    char peer_addr[64];
    int peer_port;
    char local_addr[64];
    int local_port;
    char protocol[24]; 
    char cipher[64];
    int state;         
    int mode;
    int peer_closed;
    uint64_t bytes_in;
    uint64_t bytes_out;
} ss_conn_info;
int ss_connect(ss_ctx *ctx, const char *host, int port, const char *server_name,
               int timeout_ms, ss_conn **out, ss_err *err);
int ss_conn_adopt(int fd, ss_conn **out, ss_err *err);
int ss_conn_set_mode(ss_conn *c, int mode, const char *tag, size_t tag_len, ss_err *err);
void ss_conn_set_max_message(ss_conn *c, size_t max_message);
int ss_conn_read(ss_conn *c, int timeout_ms, size_t max_bytes, const char **out,
                 size_t *out_len, ss_err *err);
void ss_conn_trim(ss_conn *c);
int ss_conn_write(ss_conn *c, const char *data, size_t len, int timeout_ms, ss_err *err);
void ss_conn_close(ss_conn *c, int timeout_ms);
void ss_conn_free(ss_conn *c);
void ss_conn_get_info(ss_conn *c, ss_conn_info *info);
int ss_conn_peer_cert(ss_conn *c, unsigned char *buf, int buf_len);
typedef struct ss_listener_config {
    const char *host;          
    int port;                  
    int reuse_addr;            
    int reuse_port;            
    int backlog;               
    int threads;               
    int handshake_timeout_ms;  
    int max_pending;           
    int max_ready;             
} ss_listener_config;
typedef struct ss_listener_stats {
    uint64_t accepted;          
    uint64_t handshakes;        
    uint64_t failed_tls;        
    uint64_t failed_io;         
    uint64_t timed_out;         
    uint64_t dropped_pending;   
    uint64_t dropped_ready;     
    uint64_t taken;             
    uint64_t pending;           
    uint64_t ready;             
    char last_failure[256];     
} ss_listener_stats;
typedef struct ss_listener ss_listener;
int ss_listener_new(ss_ctx *ctx, const ss_listener_config *cfg, ss_listener **out,
                    ss_err *err);
int ss_listener_port(ss_listener *l);
int ss_listener_wait(ss_listener *l, int timeout_ms, ss_err *err);
int ss_listener_accept(ss_listener *l, int timeout_ms, ss_conn **out, ss_err *err);
void ss_listener_get_stats(ss_listener *l, ss_listener_stats *st);
void ss_listener_shutdown(ss_listener *l);
void ss_listener_free(ss_listener *l);
void ss_free(void *p);
