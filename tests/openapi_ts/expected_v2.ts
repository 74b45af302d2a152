// What openapi-typescript 6.7 must generate from /v2/openapi.json, compared by
// test_generated_typescript.py schema by schema and operation by operation.
//
// Derived from the vendor's published types (Livion-OY/livionkey-api,
// examples/pms-integration/nodejs/types/api.ts: its paths, schema and property names,
// types, optional and nullable properties, readonly arrays, formats, defaults and status
// codes) and reviewed against shared/spec/endpoints.md. Only those facts are kept: the
// comparison drops descriptions and examples, and keeps of a doc comment only its
// "Format:" and "@default" lines, written here as one-line comments.
//
// Lines marked "// ours" are our documented extensions (docs/api.md, "The OpenAPI
// documents"): GET / (the smoke test), the optional role of a new service account, the
// error shape ErrorResponse, the statuses we send beyond the vendor's, each a
// reusable response with that shape, and the Idempotency-Key header of every POST and
// PATCH (with its 409 and 422). Everything else is the vendor's.
//
// The vendor's document gives the mechanical key contracts' five operations the ids of
// the mechanical keys' (list, create, get, update, delete), so a generator keeps one
// definition of each, the keys'. `repeated_operations` at the end holds the contract
// operations as they are typed when given ids of their own (endpoints.md §9).

export interface paths {
  "/iloq/keycontracts": {
    get: operations["IloqController_getListOfContracts"];
    post: operations["IloqController_createContract"];
  };
  "/iloq/keycontracts/{id}": {
    get: operations["IloqController_getContractById"];
    delete: operations["IloqController_deleteContractById"];
    patch: operations["IloqController_updateContractById"];
  };
  "/iloq/accessRights": {
    get: operations["IloqController_getAccessRights"];
  };
  "/automats": {
    get: operations["AutomatsController_getAutomats"];
  };
  "/automats/{id}": {
    get: operations["AutomatsController_getAutomatById"];
    patch: operations["AutomatsController_updateAutomat"];
  };
  "/automats/install": {
    post: operations["AutomatsController_installAutomat"];
  };
  "/automats/{id}/uninstall": {
    post: operations["AutomatsController_uninstallAutomat"];
  };
  "/automats/{id}/replace": {
    post: operations["AutomatsController_replaceAutomat"];
  };
  "/automats/{id}/sendPincode": {
    post: operations["AutomatsController_sendPincode"];
  };
  "/automats/{id}/cancelSendPincode": {
    post: operations["AutomatsController_cancelSendPincode"];
  };
  "/groups": {
    get: operations["GroupsController_list"];
    post: operations["GroupsController_create"];
  };
  "/groups/{id}": {
    get: operations["GroupsController_findOne"];
    delete: operations["GroupsController_delete"];
    patch: operations["GroupsController_update"];
  };
  "/organizationUnits": {
    post: operations["OrganizationUnitsController_create"];
  };
  "/serviceAccounts": {
    post: operations["ServiceAccountsController_create"];
  };
  "/serviceAccounts/{id}": {
    delete: operations["ServiceAccountsController_delete"];
  };
  "/mechanical/keycontracts": {
    get: operations["list"];
    post: operations["create"];
  };
  "/mechanical/keycontracts/{id}": {
    get: operations["get"];
    delete: operations["delete"];
    patch: operations["update"];
  };
  "/mechanical/keys": {
    get: operations["list"];
    post: operations["create"];
  };
  "/mechanical/keys/{id}": {
    get: operations["get"];
    delete: operations["delete"];
    patch: operations["update"];
  };
  "/": { // ours: the signed smoke test of the vendor's auth examples
    get: operations["AppController_root"];
  };
}

export type webhooks = Record<string, never>;

export interface components {
  schemas: {
    NotificationChannelDto: {
      sms: boolean;
      email: boolean;
    };
    ContactNotificationsDto: {
      contractKeyFetched?: components["schemas"]["NotificationChannelDto"];
      contractKeyReturned?: components["schemas"]["NotificationChannelDto"];
      contractCreated?: components["schemas"]["NotificationChannelDto"];
      contractStartReminder?: components["schemas"]["NotificationChannelDto"];
      contractEndReminder?: components["schemas"]["NotificationChannelDto"];
      contractKeysNotReturned?: components["schemas"]["NotificationChannelDto"];
      contractUpdated?: components["schemas"]["NotificationChannelDto"];
      contractSignatureRequested?: components["schemas"]["NotificationChannelDto"];
    };
    ContractContact: {
      name: string;
      email: string | null;
      phoneNumber: string | null;
      sendSms: boolean;
      sendEmail: boolean;
      language: "en" | "fi" | "sv" | "de" | "no" | "fr" | null;
      iloqPersonId: string | null;
      notifications: components["schemas"]["ContactNotificationsDto"];
    };
    IloqContractKeyStorageInfo: {
      deviceId: string;
      pincode: string | null;
    };
    IloqContractKey: {
      id: string;
      status: string | null;
      storageInfo: components["schemas"]["IloqContractKeyStorageInfo"];
      inHistory?: boolean;
    };
    IloqKeyContract: {
      id: string;
      accessRightIds: (readonly string[]) | null;
      /** Format: date-time */
      start: string;
      /** Format: date-time */
      end: string | null;
      contact: components["schemas"]["ContractContact"] | null;
      keys: readonly components["schemas"]["IloqContractKey"][];
      numberOfKeys: number | null;
      keyIds: (readonly string[]) | null;
      keyAutomatId: string | null;
      groupId: string | null;
      contractType: number;
    };
    ContactInput: {
      name: string;
      email?: string;
      phoneNumber?: string;
      sendSms?: boolean;
      sendEmail?: boolean;
      /** @default en */
      language?: "en" | "fi" | "sv" | "de" | "no" | "fr";
      notifications?: components["schemas"]["ContactNotificationsDto"];
      iloqPersonId?: string;
    };
    DefaultKeyContractDto: {
      contractType: number;
      accessRightIds: string[];
      contact?: components["schemas"]["ContactInput"];
      numberOfKeys?: number;
      pincodes?: string[];
      groupId?: string;
      keyAutomatId?: string;
      keyIds?: string[];
      /** Format: date-time */
      start: string;
      /** Format: date-time */
      end: string;
    };
    FetchKeyContractDto: {
      contractType: number;
      accessRightIds: string[];
      contact?: components["schemas"]["ContactInput"];
      numberOfKeys?: number;
      pincodes?: string[];
      groupId?: string;
      keyAutomatId?: string;
      keyIds?: string[];
      /** Format: date-time */
      start: string;
    };
    ReturnKeyContractDto: {
      contractType: number;
      contact?: components["schemas"]["ContactInput"];
      pincodes?: string[];
      groupId?: string;
      keyAutomatId?: string;
      /** Format: date-time */
      end: string;
      keyIds: string[];
      /** Format: date-time */
      start?: string;
    };
    HandoverIloqKeyBaseDto: {
      contractType: number;
      accessRightIds: string[];
      contact?: components["schemas"]["ContactInput"];
      numberOfKeys?: number;
      pincodes?: string[];
      groupId?: string;
      keyAutomatId?: string;
      keyIds?: string[];
      /** Format: date-time */
      start: string;
      /** Format: date-time */
      end: string;
    };
    CreateIloqKeyContractDto: {
      input: components["schemas"]["HandoverIloqKeyBaseDto"];
    };
    PaginationResponseDto: {
      after: string;
      limit: number;
      hasNext: boolean;
    };
    UpdateIloqContractDto: {
      contact?: components["schemas"]["ContactInput"];
      /** Format: date-time */
      start?: string;
      /** Format: date-time */
      end?: string;
    };
    IloqAccessRight: {
      id: string;
      name: string;
      realEstatePath: string | null;
    };
    AutomatLocation: {
      address: string | null;
      postalCode: string | null;
      postalOffice: string | null;
    };
    AutomatGroup: {
      id: string;
      name: string;
    };
    AutomatLockerAssignedKey: {
      id: string;
      name: string;
    };
    AutomatLocker: {
      lockerIndex: string;
      isKeyInside: boolean;
      key: components["schemas"]["AutomatLockerAssignedKey"] | null;
    };
    Automat: {
      id: string;
      name: string;
      location: components["schemas"]["AutomatLocation"];
      label: string | null;
      groups: readonly components["schemas"]["AutomatGroup"][];
      hwId: string | null;
      timezone: string | null;
      installationPincode: string | null;
      lockers: readonly components["schemas"]["AutomatLocker"][];
      lifecycleState: string | null;
    };
    InstallAutomatDto: {
      name: string;
      organizationUnitId?: string;
      label?: string;
      groupId?: string;
      address: string;
      postalCode: string;
      postalOffice: string;
      timezone: string;
      product: "key20" | "key30";
    };
    AutomatLocationDto: {
      address?: string;
      postalCode?: string;
      postalOffice?: string;
    };
    UpdateAutomatDto: {
      name?: string;
      label?: string;
      groups?: string[];
      timezone?: string;
      location?: components["schemas"]["AutomatLocationDto"];
    };
    SendPincodeDto: {
      pincode: string;
      /** @default false */
      proximityCheck?: boolean;
    };
    SendPincodeResponseDto: {
      success: boolean;
      reason: string | null;
    };
    CancelSendPincodeDto: {
      pincode: string;
    };
    CreateGroupDto: {
      name: string;
      customerId: string;
      type: number;
    };
    GroupMember: {
      id: string;
      name: string;
    };
    Group: {
      id: string;
      name: string;
      customerId: string | null;
      type: number;
      members: readonly components["schemas"]["GroupMember"][];
    };
    UpdateGroupDto: {
      name?: string;
      customerId?: string;
    };
    IloqApiUserDto: {
      username: string;
      password: string;
      customerCode: string;
      serviceAddress: string;
    };
    CreateOrganizationUnitDto: {
      /** @default 1 */
      type: number;
      name: string;
      customerId: string;
      parentId?: string;
      iloqApiUser?: components["schemas"]["IloqApiUserDto"];
    };
    IloqApiUser: {
      username: string;
      password: string;
      customerCode: string;
      serviceAddress: string;
    };
    OrganizationUnit: {
      id: string;
      name: string;
      customerId: string | null;
      iloqApiUser: components["schemas"]["IloqApiUser"] | null;
      parentId: string | null;
      type: number;
    };
    CreateServiceAccountDto: {
      organizationUnitId: string;
      name: string;
      role?: string; // ours: integration (default) or admin
    };
    ServiceAccount: {
      id: string;
      name: string;
      role: string;
      privateKey: string;
      organizationUnitId: string;
    };
    ContractContactInput: {
      name: string;
      email?: string;
      phoneNumber?: string;
      sendSms?: boolean;
      sendEmail?: boolean;
      /** @default en */
      language?: "en" | "fi" | "sv" | "de" | "no" | "fr";
      notifications?: components["schemas"]["ContactNotificationsDto"];
    };
    KeyFromAutomatInfoInput: {
      pincode?: string;
      automatId?: string;
    };
    KeyFromManualStorageInfoInput: {
      manualStorageInfo?: string;
    };
    ContractKeyInput: {
      id: string;
      storageInfo?: components["schemas"]["KeyFromManualStorageInfoInput"] | components["schemas"]["KeyFromAutomatInfoInput"];
    };
    CreateMechanicalKeyContractDto: {
      /** Format: date-time */
      start: string;
      /** Format: date-time */
      end?: string | null;
      contact: components["schemas"]["ContractContactInput"];
      userVerification?: string | null;
      keys: components["schemas"]["ContractKeyInput"][];
      pickUpInfoForManualStorageKeys?: string | null;
      freeLockerAfterFetch?: boolean | null;
      id?: string | null;
    };
    CommonContractContact: {
      name: string;
      email: string | null;
      phoneNumber: string | null;
      sendSms: boolean;
      sendEmail: boolean;
      language: "en" | "fi" | "sv" | "de" | "no" | "fr" | null;
      notifications: components["schemas"]["ContactNotificationsDto"];
    };
    KeyFromAutomatInfo: {
      pincode: string;
      automatId: string;
    };
    KeyFromManualStorageInfo: {
      manualStorageInfo: string;
    };
    ContractKey: {
      id: string;
      storageInfo: components["schemas"]["KeyFromManualStorageInfo"] | components["schemas"]["KeyFromAutomatInfo"];
      status?: string | null;
      inHistory?: boolean;
    };
    MechanicalKeyContract: {
      id: string;
      /** Format: date-time */
      start: string;
      /** Format: date-time */
      end: string | null;
      contact: components["schemas"]["CommonContractContact"] | null;
      keys: readonly components["schemas"]["ContractKey"][];
      freeLockerAfterFetch?: boolean | null;
      userVerification?: string;
      pickUpInfoForManualStorageKeys?: string | null;
    };
    UpdateMechanicalKeyContractDto: {
      /** Format: date-time */
      start?: string | null;
      /** Format: date-time */
      end?: string | null;
      contact?: components["schemas"]["ContractContactInput"] | null;
      userVerification?: string | null;
      pickUpInfoForManualStorageKeys?: string | null;
    };
    DeviceStorageDto: {
      automatId: string;
    };
    ManualStorageDto: {
      manualStorageInfo: string;
    };
    CreateMechanicalKeyDto: {
      name?: string | null;
      organizationUnitId?: string | null;
      id: string;
      rfidHex?: string | null;
      selectedStorage: components["schemas"]["DeviceStorageDto"] | components["schemas"]["ManualStorageDto"];
      /** @default false */
      shared?: boolean | null;
      away: boolean;
    };
    DeviceStorage: {
      automatId?: string;
    };
    ManualStorage: {
      manualStorageInfo?: string;
    };
    KeyStatus: {
      available: boolean;
    };
    MechanicalKey: {
      name?: string | null;
      organizationUnitId: string;
      id: string;
      rfidHex?: string | null;
      selectedStorage: components["schemas"]["DeviceStorage"] | components["schemas"]["ManualStorage"];
      storage: components["schemas"]["DeviceStorage"] | components["schemas"]["ManualStorage"] | null;
      targetStorage: components["schemas"]["DeviceStorage"] | components["schemas"]["ManualStorage"] | null;
      status: components["schemas"]["KeyStatus"];
      shared: boolean;
    };
    UpdateMechanicalKeyDto: {
      name?: string | null;
      rfidHex?: string | null;
      selectedStorage?: components["schemas"]["DeviceStorageDto"] | components["schemas"]["ManualStorageDto"];
      /** @default false */
      shared?: boolean | null;
    };
    DeleteMechanicalKeyDto: {
      deleteActiveContracts?: boolean;
    };
    ErrorResponse: { // ours: the one error shape of every 4xx and 5xx answer
      statusCode: number;
      message: string | string[];
      error: string;
    };
    SmokeTestResponse: { // ours: GET /
      ok: boolean;
      serviceAccountId: string;
      organizationUnitId: string;
    };
  };
  responses: { // ours: the statuses we add, each with the one error shape
    BadGateway: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    BadRequest: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    Conflict: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    Forbidden: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    IdempotencyKeyReused: { // ours
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    NotFound: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    PayloadTooLarge: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    ServiceUnavailable: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    TooManyRequests: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
    Unauthorized: {
      content: {
        "application/json": components["schemas"]["ErrorResponse"];
      };
    };
  };
  parameters: never;
  requestBodies: never;
  headers: never;
  pathItems: never;
}

export type $defs = Record<string, never>;

export type external = Record<string, never>;

export interface operations {
  IloqController_getListOfContracts: {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
        ongoing?: boolean;
        ended?: boolean;
        future?: boolean;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
            hasNext?: components["schemas"]["PaginationResponseDto"]["hasNext"];
          } & {
            data?: components["schemas"]["IloqKeyContract"][];
          };
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  IloqController_createContract: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateIloqKeyContractDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["IloqKeyContract"];
        };
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      409: {
        content: never;
      };
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
      502: components["responses"]["BadGateway"]; // ours
      503: components["responses"]["ServiceUnavailable"]; // ours
    };
  };
  IloqController_getContractById: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["IloqKeyContract"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      404: components["responses"]["NotFound"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  IloqController_deleteContractById: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      204: {
        content: never;
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      404: components["responses"]["NotFound"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  IloqController_updateContractById: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["UpdateIloqContractDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["IloqKeyContract"];
        };
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      404: components["responses"]["NotFound"]; // ours
      409: {
        content: never;
      };
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  IloqController_getAccessRights: {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
        returnDefaultAccessesOnly?: boolean;
        search?: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
          } & {
            data?: components["schemas"]["IloqAccessRight"][];
          };
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
      502: components["responses"]["BadGateway"]; // ours
      503: components["responses"]["ServiceUnavailable"]; // ours
    };
  };
  AutomatsController_getAutomats: {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
            hasNext?: components["schemas"]["PaginationResponseDto"]["hasNext"];
          } & {
            data?: components["schemas"]["Automat"][];
          };
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_getAutomatById: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["Automat"];
        };
      };
      404: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_updateAutomat: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["UpdateAutomatDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["Automat"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      404: components["responses"]["NotFound"]; // ours
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_installAutomat: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["InstallAutomatDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["Automat"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_uninstallAutomat: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    responses: {
      204: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      404: components["responses"]["NotFound"]; // ours
      409: components["responses"]["Conflict"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_replaceAutomat: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["Automat"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      404: components["responses"]["NotFound"]; // ours
      409: components["responses"]["Conflict"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_sendPincode: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["SendPincodeDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["SendPincodeResponseDto"];
        };
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      404: {
        content: never;
      };
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AutomatsController_cancelSendPincode: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CancelSendPincodeDto"];
      };
    };
    responses: {
      200: {
        content: never;
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      404: {
        content: never;
      };
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  GroupsController_list: {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
        customerId?: string;
        search?: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
            hasNext?: components["schemas"]["PaginationResponseDto"]["hasNext"];
          } & {
            data?: components["schemas"]["Group"][];
          };
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  GroupsController_create: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateGroupDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["Group"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  GroupsController_findOne: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["Group"];
        };
      };
      404: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  GroupsController_delete: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      204: {
        content: never;
      };
      404: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  GroupsController_update: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["UpdateGroupDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["Group"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      404: {
        content: never;
      };
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  OrganizationUnitsController_create: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateOrganizationUnitDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["OrganizationUnit"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  ServiceAccountsController_create: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateServiceAccountDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["ServiceAccount"];
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  ServiceAccountsController_delete: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      204: {
        content: never;
      };
      404: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      403: components["responses"]["Forbidden"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  list: {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
        search?: string;
        selectedStorage?: string;
        automatId?: string;
        organizationUnitId?: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
            hasNext?: components["schemas"]["PaginationResponseDto"]["hasNext"];
          } & {
            data?: components["schemas"]["MechanicalKey"][];
          };
        };
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  create: {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateMechanicalKeyDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["MechanicalKey"];
        };
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      409: {
        content: never;
      };
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  get: {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["MechanicalKey"];
        };
      };
      404: {
        content: never;
      };
      400: components["responses"]["BadRequest"]; // ours
      401: components["responses"]["Unauthorized"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  delete: {
    parameters: {
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["DeleteMechanicalKeyDto"];
      };
    };
    responses: {
      204: {
        content: never;
      };
      400: {
        content: never;
      };
      404: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  update: {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["UpdateMechanicalKeyDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["MechanicalKey"];
        };
      };
      400: {
        content: never;
      };
      401: components["responses"]["Unauthorized"]; // ours
      404: {
        content: never;
      };
      409: components["responses"]["Conflict"]; // ours
      413: components["responses"]["PayloadTooLarge"]; // ours
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"]; // ours
    };
  };
  AppController_root: { // ours
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["SmokeTestResponse"];
        };
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      429: components["responses"]["TooManyRequests"];
    };
  };
}

// The mechanical key contracts' operations, with ids of their own (endpoints.md §9: the
// vendor's document keeps their schemas, not their typing). Their error statuses are
// ours, as endpoints.md §10 marks them; so are the list filters after limit.
export interface repeated_operations {
  "get /mechanical/keycontracts": {
    parameters: {
      query?: {
        after?: string;
        limit?: number;
        keyId?: string; // ours
        ongoing?: boolean; // ours
        ended?: boolean; // ours
        future?: boolean; // ours
      };
    };
    responses: {
      200: {
        content: {
          "application/json": {
            after?: components["schemas"]["PaginationResponseDto"]["after"];
            limit?: components["schemas"]["PaginationResponseDto"]["limit"];
            hasNext?: components["schemas"]["PaginationResponseDto"]["hasNext"];
          } & {
            data?: components["schemas"]["MechanicalKeyContract"][];
          };
        };
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      429: components["responses"]["TooManyRequests"];
    };
  };
  "post /mechanical/keycontracts": {
    parameters: { // ours
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateMechanicalKeyContractDto"];
      };
    };
    responses: {
      201: {
        content: {
          "application/json": components["schemas"]["MechanicalKeyContract"];
        };
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      409: components["responses"]["Conflict"];
      413: components["responses"]["PayloadTooLarge"];
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"];
    };
  };
  "get /mechanical/keycontracts/{id}": {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["MechanicalKeyContract"];
        };
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      404: components["responses"]["NotFound"];
      429: components["responses"]["TooManyRequests"];
    };
  };
  "delete /mechanical/keycontracts/{id}": {
    parameters: {
      path: {
        id: string;
      };
    };
    responses: {
      204: {
        content: never;
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      404: components["responses"]["NotFound"];
      429: components["responses"]["TooManyRequests"];
    };
  };
  "patch /mechanical/keycontracts/{id}": {
    parameters: {
      header?: { // ours
        "Idempotency-Key"?: string; // ours
      };
      path: {
        id: string;
      };
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["UpdateMechanicalKeyContractDto"];
      };
    };
    responses: {
      200: {
        content: {
          "application/json": components["schemas"]["MechanicalKeyContract"];
        };
      };
      400: components["responses"]["BadRequest"];
      401: components["responses"]["Unauthorized"];
      404: components["responses"]["NotFound"];
      409: components["responses"]["Conflict"];
      413: components["responses"]["PayloadTooLarge"];
      422: components["responses"]["IdempotencyKeyReused"]; // ours
      429: components["responses"]["TooManyRequests"];
    };
  };
}
